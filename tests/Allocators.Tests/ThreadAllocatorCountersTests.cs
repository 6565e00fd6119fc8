namespace AllocHosting.Allocators.Tests;

/// <summary>
/// The per-thread counters of the thread-safe adaptors (<see cref="ThreadAllocatorCounters"/>):
/// each thread writes its own cell without locked instructions and reads sum the cells, so the
/// figures must stay exact when blocks cross threads, when threads exit (their cells are folded
/// into retired totals) and when one thread alternates between more allocators than its cache has slots.
/// </summary>
public sealed class ThreadAllocatorCountersTests
{
    [Fact]
    public void A_block_freed_on_another_thread_leaves_the_sums_exact()
    {
        var counters = new ThreadAllocatorCounters();
        counters.Allocated(100, 100);
        counters.Allocated(50, 64);
        TestThreads.RunOnNewThread(() => counters.Freed(100));

        AllocatorStatistics statistics = counters.ToStatistics(null, 0);
        Assert.Equal(64, statistics.BytesInUse);
        Assert.Equal(2, statistics.AllocationCount);
        Assert.Equal(1, statistics.DeallocationCount);
        Assert.Equal(150, statistics.TotalBytesAllocated);
        Assert.Equal(164, statistics.PeakBytesInUse);   // exact: one thread made every allocation before the other came
    }

    [Fact]
    public void The_peak_is_exact_while_one_thread_updates()
    {
        var counters = new ThreadAllocatorCounters();
        counters.Allocated(10, 10);
        counters.Allocated(30, 30);
        counters.Freed(30);
        counters.Resized(5);
        counters.Moved(20);

        AllocatorStatistics statistics = counters.ToStatistics(1000, 3);
        Assert.Equal(15, statistics.BytesInUse);
        Assert.Equal(40, statistics.PeakBytesInUse);
        Assert.Equal(3, statistics.AllocationCount);
        Assert.Equal(2, statistics.DeallocationCount);
        Assert.Equal(60, statistics.TotalBytesAllocated);
        Assert.Equal(1000, statistics.Capacity);
        Assert.Equal(3, statistics.FailureCount);
    }

    [Fact]
    public void Counts_of_exited_threads_are_kept_and_their_cells_dropped()
    {
        var counters = new ThreadAllocatorCounters();
        const int Threads = 20;
        for (int t = 0; t < Threads; t++)
        {
            TestThreads.RunOnNewThread(() =>
            {
                counters.Allocated(8, 8);
                counters.Allocated(8, 8);
                counters.Freed(8);
            });
        }

        // This thread's first update registers its cell and folds every exited thread's into the totals.
        counters.Freed(8);
        Assert.InRange(counters.RegisteredCellCount, 1, 2);

        AllocatorStatistics statistics = counters.ToStatistics(null, 0);
        Assert.Equal((Threads * 8) - 8, statistics.BytesInUse);
        Assert.Equal(2 * Threads, statistics.AllocationCount);
        Assert.Equal(Threads + 1, statistics.DeallocationCount);
        Assert.Equal(Threads * 16, statistics.TotalBytesAllocated);
        Assert.True(statistics.PeakBytesInUse >= statistics.BytesInUse);
    }

    [Fact]
    public void A_thread_alternating_between_more_allocators_than_cache_slots_keeps_each_count_apart()
    {
        using var allocators = new DisposableList<NativeMemoryAllocator>();
        for (int i = 0; i < 11; i++)
        {
            allocators.Add(new NativeMemoryAllocator());
        }

        for (int round = 0; round < 3; round++)
        {
            for (int i = 0; i < allocators.Count; i++)
            {
                for (int k = 0; k <= i; k++)
                {
                    Free(allocators[i], Allocate(allocators[i], (nuint)(k + 1)), (nuint)(k + 1));
                }
            }
        }

        for (int i = 0; i < allocators.Count; i++)
        {
            AllocatorStatistics statistics = allocators[i].Statistics;
            Assert.Equal(3 * (i + 1), statistics.AllocationCount);
            Assert.Equal(3 * (i + 1), statistics.DeallocationCount);
            Assert.Equal(3L * (i + 1) * (i + 2) / 2, statistics.TotalBytesAllocated);
            Assert.Equal(0, statistics.BytesInUse);
            Assert.Equal(i + 1, statistics.PeakBytesInUse);
        }
    }

    [Fact]
    public void The_peak_of_two_threads_is_at_least_what_a_read_saw_and_never_below_bytes_in_use()
    {
        var counters = new ThreadAllocatorCounters();
        using var allocated = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var other = new Thread(() =>
        {
            counters.Allocated(1000, 1000);
            allocated.Set();
            release.Wait(TimeSpan.FromSeconds(10));
            counters.Freed(1000);
        });
        other.Start();
        Assert.True(allocated.Wait(TimeSpan.FromSeconds(10)));
        counters.Allocated(500, 500);

        AllocatorStatistics during = counters.ToStatistics(null, 0);
        Assert.Equal(1500, during.BytesInUse);
        Assert.Equal(1500, during.PeakBytesInUse);

        release.Set();
        other.Join();
        counters.Freed(500);
        AllocatorStatistics after = counters.ToStatistics(null, 0);
        Assert.Equal(0, after.BytesInUse);
        Assert.Equal(1500, after.PeakBytesInUse);
    }

    private static unsafe nint Allocate(NativeMemoryAllocator allocator, nuint size) => (nint)allocator.Allocate(size, 8);

    private static unsafe void Free(NativeMemoryAllocator allocator, nint block, nuint size) => allocator.Deallocate((byte*)block, size, 8);

    private sealed class DisposableList<T> : List<T>, IDisposable
        where T : IDisposable
    {
        public void Dispose() => ForEach(static item => item.Dispose());
    }
}
