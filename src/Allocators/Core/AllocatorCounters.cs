namespace AllocHosting.Allocators;

/// <summary>
/// Plain (non-atomic) counters for an allocator used by one thread at a time. Embedded as a
/// mutable field; never copy it.
/// </summary>
internal struct AllocatorCounters
{
    public long BytesInUse;
    public long PeakBytesInUse;
    public long AllocationCount;
    public long DeallocationCount;
    public long TotalBytesAllocated;

    /// <summary>Records an allocation of <paramref name="requested"/> bytes that took <paramref name="accounted"/> bytes of the allocator.</summary>
    public void Allocated(nuint requested, nuint accounted)
    {
        AllocationCount++;
        TotalBytesAllocated += (long)requested;
        BytesInUse += (long)accounted;
        if (BytesInUse > PeakBytesInUse)
        {
            PeakBytesInUse = BytesInUse;
        }
    }

    /// <summary>Records a free that gave <paramref name="accounted"/> bytes back.</summary>
    public void Freed(nuint accounted)
    {
        DeallocationCount++;
        BytesInUse -= (long)accounted;
    }

    /// <summary>Records a resize in place that changed the bytes taken by <paramref name="delta"/>.</summary>
    public void Resized(long delta)
    {
        BytesInUse += delta;
        if (BytesInUse > PeakBytesInUse)
        {
            PeakBytesInUse = BytesInUse;
        }
    }

    /// <summary>Adds <paramref name="other"/>'s counts, its peak included: a sum of parts' peaks, each reached at its own time, bounds the whole's from above.</summary>
    public void Add(in AllocatorCounters other)
    {
        AllocationCount += other.AllocationCount;
        DeallocationCount += other.DeallocationCount;
        TotalBytesAllocated += other.TotalBytesAllocated;
        BytesInUse += other.BytesInUse;
        PeakBytesInUse += other.PeakBytesInUse;
    }

    public readonly AllocatorStatistics ToStatistics(long? capacity, long failures) =>
        new(BytesInUse, PeakBytesInUse, capacity, AllocationCount, DeallocationCount, failures, TotalBytesAllocated);
}
