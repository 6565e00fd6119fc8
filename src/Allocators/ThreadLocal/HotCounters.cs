namespace AllocHosting.Allocators;

/// <summary>The per-allocation counters of a heap; the heap keeps them in a <see cref="CacheLinePadded{T}"/>, clear of anything else on either side.</summary>
internal struct HotCounters
{
    /// <summary>Blocks handed out.</summary>
    public long AllocationCount;

    /// <summary>Bytes requested.</summary>
    public long TotalBytesAllocated;
}
