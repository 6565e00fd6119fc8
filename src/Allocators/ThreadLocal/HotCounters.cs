using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>The per-allocation counters of a heap, 128 bytes clear of anything else on either side.</summary>
[StructLayout(LayoutKind.Explicit, Size = 272)]
internal struct HotCounters
{
    /// <summary>Blocks handed out.</summary>
    [FieldOffset(128)]
    public long AllocationCount;

    /// <summary>Bytes requested.</summary>
    [FieldOffset(136)]
    public long TotalBytesAllocated;
}
