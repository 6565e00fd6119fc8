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
    long TotalBytesAllocated);
