using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// A <typeparamref name="T"/> with 128 bytes that nothing touches on either side: how a class keeps
/// the fields its owner thread writes on every operation (a slab page's free list, a heap's
/// counters) off the cache lines that other threads read or write.
/// </summary>
/// <remarks>
/// The companion of <see cref="ProcessorStripes{T}"/>, which pads one value per processor; this pads
/// one value in place, as a field of the object that uses it. <typeparamref name="T"/> is unmanaged
/// so that the sequential layout holds (the runtime may reorder a struct that holds references); a
/// padded state that holds a reference uses an explicit layout instead (<see cref="RemoteFreeBatch"/>).
/// Access costs nothing: <see cref="Value"/> is at a constant offset.
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal struct CacheLinePadded<T>
    where T : unmanaged
{
#pragma warning disable CS0169 // Never read nor written: the padding is what keeps Value apart.
    private CacheLinePadding _before;
#pragma warning restore CS0169

    /// <summary>The padded value.</summary>
    public T Value;

#pragma warning disable CS0169
    private CacheLinePadding _after;
#pragma warning restore CS0169
}
