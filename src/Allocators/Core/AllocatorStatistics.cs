namespace AllocHosting.Allocators;

/// <summary>A snapshot of an allocator's counters. Reading it is cheap and does not synchronise with other threads.</summary>
/// <param name="BytesInUse">Bytes handed out and not yet given back, as the allocator accounts them (including block rounding and alignment padding it cannot reuse).</param>
/// <param name="PeakBytesInUse">The largest <paramref name="BytesInUse"/> seen since creation (or since the last reset of the peak).</param>
/// <param name="Capacity">Bytes the allocator can hand out in all, or <see langword="null"/> when it is not bounded by a fixed region.</param>
/// <param name="AllocationCount">Successful allocations since creation (reallocations that move count once more).</param>
/// <param name="DeallocationCount">Blocks freed since creation.</param>
/// <param name="FailureCount">Requests refused because the allocator was exhausted.</param>
/// <param name="TotalBytesAllocated">Bytes handed out since creation, the sum of the sizes requested.</param>
public readonly record struct AllocatorStatistics(
    long BytesInUse,
    long PeakBytesInUse,
    long? Capacity,
    long AllocationCount,
    long DeallocationCount,
    long FailureCount,
    long TotalBytesAllocated)
{
    /// <summary>
    /// Combines the statistics of two allocators, such as a composite allocator's parts: every
    /// counter is the sum of both (the peak too, an upper bound of the combined peak).
    /// </summary>
    /// <param name="left">The first allocator's statistics.</param>
    /// <param name="right">The second allocator's statistics.</param>
    /// <returns>The field-by-field sum; <see cref="Capacity"/> is the sum when both capacities are known, otherwise <see langword="null"/> (unbounded).</returns>
    public static AllocatorStatistics operator +(AllocatorStatistics left, AllocatorStatistics right) => new(
        left.BytesInUse + right.BytesInUse,
        left.PeakBytesInUse + right.PeakBytesInUse,
        left.Capacity is { } a && right.Capacity is { } b ? a + b : null,
        left.AllocationCount + right.AllocationCount,
        left.DeallocationCount + right.DeallocationCount,
        left.FailureCount + right.FailureCount,
        left.TotalBytesAllocated + right.TotalBytesAllocated);
}
