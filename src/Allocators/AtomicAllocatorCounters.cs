namespace AllocHosting.Allocators;

/// <summary>
/// The counters of a thread-safe allocator, updated with interlocked operations so that any thread
/// may allocate and free. Embedded as a mutable field; never copy it. The single-threaded
/// counterpart is <see cref="AllocatorCounters"/>.
/// </summary>
internal struct AtomicAllocatorCounters
{
    // BytesInUse is what the allocator accounts for live blocks; PeakBytesInUse only grows.
    private long _bytesInUse;
    private long _peakBytesInUse;
    private long _allocationCount;
    private long _deallocationCount;
    private long _totalBytesAllocated;

    /// <summary>Records an allocation of <paramref name="requested"/> bytes that took <paramref name="accounted"/> bytes.</summary>
    public void Allocated(nuint requested, nuint accounted)
    {
        Interlocked.Increment(ref _allocationCount);
        Interlocked.Add(ref _totalBytesAllocated, (long)requested);
        Resized((long)accounted);
    }

    /// <summary>Records a free that gave <paramref name="accounted"/> bytes back.</summary>
    public void Freed(nuint accounted)
    {
        Interlocked.Increment(ref _deallocationCount);
        Interlocked.Add(ref _bytesInUse, -(long)accounted);
    }

    /// <summary>Records a reallocation that moved a block: one more allocation of <paramref name="newRequested"/> bytes and one more free.</summary>
    public void Moved(nuint newRequested)
    {
        Interlocked.Increment(ref _allocationCount);
        Interlocked.Increment(ref _deallocationCount);
        Interlocked.Add(ref _totalBytesAllocated, (long)newRequested);
    }

    /// <summary>Changes the bytes in use by <paramref name="delta"/> and folds the result into the peak.</summary>
    public void Resized(long delta)
    {
        long inUse = Interlocked.Add(ref _bytesInUse, delta);
        long peak = Volatile.Read(ref _peakBytesInUse);
        while (inUse > peak)
        {
            long seen = Interlocked.CompareExchange(ref _peakBytesInUse, inUse, peak);
            if (seen == peak)
            {
                break;
            }

            peak = seen;
        }
    }

    public readonly AllocatorStatistics ToStatistics(long? capacity, long failures) => new(
        Volatile.Read(in _bytesInUse),
        Volatile.Read(in _peakBytesInUse),
        capacity,
        Volatile.Read(in _allocationCount),
        Volatile.Read(in _deallocationCount),
        failures,
        Volatile.Read(in _totalBytesAllocated));
}
