using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// 128 bytes that nothing reads or writes: the gap <see cref="ProcessorStripes{T}"/> keeps on either
/// side of each stripe, two 64-byte lines because adjacent-line prefetchers fetch lines in pairs.
/// </summary>
/// <remarks>
/// An inline array rather than an explicit layout: a type nested in a generic type is generic, and
/// a generic type cannot have an explicit layout; an inline array of longs holds no reference, so
/// the runtime keeps it at full size wherever it is placed.
/// </remarks>
[InlineArray(16)]
internal struct CacheLinePadding
{
    private long _element0;
}
