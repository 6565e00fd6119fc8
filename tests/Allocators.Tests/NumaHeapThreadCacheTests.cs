using static AllocHosting.Allocators.Tests.TestThreads;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// <see cref="NumaHeapAllocatorOptions.ThreadCaches"/>: each thread's stacks of freed small blocks of
/// its own heap. What they keep from other threads, the frees they refuse, what they give back (on
/// overflow, at collections, at Trim, when their thread exits), that no segment is unmapped under them, and that the
/// statistics and the heaps' snapshots still add up.
/// </summary>
public unsafe class NumaHeapThreadCacheTests
{
    private static NumaHeapAllocator Create(bool threadCaches = true, int heapsPerNode = 1) => new(new NumaHeapAllocatorOptions
    {
        SegmentSize = NumaHeapAllocatorOptions.MinimumSegmentSize,
        MaximumHeapBlockSize = 64 * 1024,
        HeapsPerNode = heapsPerNode,
        ThreadCaches = threadCaches,
    });

    // Ten blocks of 64 B allocated and freed by the calling thread: with the spares of the refill that
    // served the first, 17 blocks on its stack and none in the heap's cache. Returns the ten.
    private static nint[] AllocateAndFreeTen(NumaHeapAllocator allocator)
    {
        nint[] blocks = [.. Enumerable.Range(0, 10).Select(_ => (nint)allocator.Allocate(64, 16))];
        foreach (nint block in blocks)
        {
            allocator.Deallocate((byte*)block, 64, 16);
        }

        return blocks;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_block_freed_by_one_thread_is_reused_by_it_and_stays_out_of_another_threads_reach_only_with_thread_caches(bool threadCaches)
    {
        using NumaHeapAllocator allocator = Create(threadCaches);
        byte* first = allocator.Allocate(100, 16);
        allocator.Deallocate(first, 100, 16);
        Assert.True(allocator.Allocate(100, 16) == first);   // last in, first out, either way
        allocator.Deallocate(first, 100, 16);

        // Another thread of the same (only) heap: the heap's cache would hand it the block; a thread cache keeps it.
        nint other = 0;
        RunOnNewThread(() =>
        {
            other = (nint)allocator.Allocate(100, 16);
            allocator.Deallocate((byte*)other, 100, 16);
        });
        Assert.Equal(!threadCaches, other == (nint)first);
        Assert.Null(allocator.Validate());
    }

    [Fact]
    public void A_double_free_a_wrong_size_and_an_interior_pointer_are_refused_on_the_cached_path_and_change_nothing()
    {
        using NumaHeapAllocator allocator = Create();
        byte* block = allocator.Allocate(64, 16);
        byte* interior = allocator.Allocate(200, 16);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 500, 16));   // another usable size
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(interior + 16, 64, 16));
        allocator.Deallocate(block, 64, 16);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 64, 16));    // now in the thread's stack

        // The block is handed out once, not twice, and the refused calls left both blocks intact.
        byte* again = allocator.Allocate(64, 16);
        byte* next = allocator.Allocate(64, 16);
        Assert.True(again == block);
        Assert.True(next != block);
        allocator.Deallocate(again, 64, 16);
        allocator.Deallocate(next, 64, 16);
        allocator.Deallocate(interior, 200, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Null(allocator.Validate());
    }

    [Fact]
    public void A_full_class_gives_half_back_to_the_heap_and_every_block_stays_unique()
    {
        using NumaHeapAllocator allocator = Create();
        var blocks = Enumerable.Range(0, 100).Select(_ => (nint)allocator.Allocate(48, 16)).ToList();
        Assert.Equal(blocks.Count, blocks.Distinct().Count());
        foreach (nint block in blocks)
        {
            allocator.Deallocate((byte*)block, 48, 16);   // the stack of 32 overflows: halves go back
        }

        NumaHeapSnapshot heap = allocator.GetHeaps().Single();
        Assert.Equal(0, heap.BytesInUse);
        Assert.InRange(heap.CachedBlockCount, 1, 100);
        var again = Enumerable.Range(0, 100).Select(_ => (nint)allocator.Allocate(48, 16)).ToList();
        Assert.Equal(again.Count, again.Distinct().Count());
        Assert.Equal(100 * 48, allocator.Statistics.BytesInUse);
        foreach (nint block in again)
        {
            allocator.Deallocate((byte*)block, 48, 16);
        }

        Assert.Null(allocator.Validate());
    }

    [Fact]
    public void The_blocks_of_a_thread_that_exited_go_back_and_trim_unmaps_every_segment()
    {
        using NumaHeapAllocator allocator = Create();
        RunOnNewThread(() =>
        {
            var blocks = Enumerable.Range(0, 300).Select(i => ((nint)allocator.Allocate((nuint)(16 + (i * 13 % 4000)), 16), 16 + (i * 13 % 4000))).ToList();
            foreach ((nint block, int size) in blocks)
            {
                allocator.Deallocate((byte*)block, (nuint)size, 16);
            }
        });

        Assert.True(allocator.GetHeaps().Single().CachedBlockCount > 0);   // the exited thread's stacks still hold blocks
        AllocatorStatistics statistics = allocator.Statistics;
        Assert.Equal((300, 300, 0L), (statistics.AllocationCount, statistics.DeallocationCount, statistics.BytesInUse));

        Assert.True(allocator.Trim() > 0);
        Assert.Equal(0, allocator.MappedBytes);
        Assert.Equal((300, 300), (allocator.Statistics.AllocationCount, allocator.Statistics.DeallocationCount));
        Assert.Null(allocator.Validate());
    }

    [Fact]
    public void A_segment_holding_a_live_threads_cached_blocks_is_not_unmapped_and_that_thread_can_trim_it()
    {
        using NumaHeapAllocator allocator = Create();
        using var cached = new ManualResetEventSlim();
        using var trimmed = new ManualResetEventSlim();
        long mappedAfterOwnTrim = -1;
        var owner = new Thread(() =>
        {
            byte* block = allocator.Allocate(256, 16);
            allocator.Deallocate(block, 256, 16);
            cached.Set();
            trimmed.Wait();

            // The stacked block is still mapped: write all of it.
            byte* again = allocator.Allocate(256, 16);
            new Span<byte>(again, 256).Fill(0xA5);
            allocator.Deallocate(again, 256, 16);
            allocator.Trim();
            mappedAfterOwnTrim = allocator.MappedBytes;
        });
        owner.Start();
        Assert.True(cached.Wait(TimeSpan.FromSeconds(30)));

        Assert.Equal(0, allocator.Trim());                  // another thread's trim leaves that segment alone
        Assert.True(allocator.MappedBytes > 0);
        trimmed.Set();
        Assert.True(owner.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal(0, mappedAfterOwnTrim);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Statistics_and_heap_snapshots_add_up_when_one_thread_allocates_and_another_frees(int heapsPerNode)
    {
        using NumaHeapAllocator allocator = Create(heapsPerNode: heapsPerNode);
        nint[] blocks = [];
        RunOnNewThread(() => blocks = [.. Enumerable.Range(0, 100).Select(_ => (nint)allocator.Allocate(100, 16))]);
        Assert.Equal(100 * 112, allocator.Statistics.BytesInUse);
        Assert.Equal(100 * 112, allocator.GetHeaps().Sum(h => h.BytesInUse));

        // The freeing thread allocates first, so that it has a state here (and the exited thread's is
        // retired); with two heaps per node it has the other heap (the locked path), with one its own stacks.
        RunOnNewThread(() =>
        {
            allocator.Deallocate(allocator.Allocate(100, 16), 100, 16);
            foreach (nint block in blocks)
            {
                allocator.Deallocate((byte*)block, 100, 16);
            }
        });

        AllocatorStatistics statistics = allocator.Statistics;
        Assert.Equal((101, 101, 0L, 101L * 100), (statistics.AllocationCount, statistics.DeallocationCount, statistics.BytesInUse, statistics.TotalBytesAllocated));
        Assert.All(allocator.GetHeaps(), h => Assert.Equal(0, h.BytesInUse));
        allocator.Flush();
        Assert.Null(allocator.Validate());
    }

    [Fact]
    public void After_dispose_a_thread_with_cached_blocks_is_refused_instead_of_handed_unmapped_memory()
    {
        var allocator = Create();
        using var cached = new ManualResetEventSlim();
        using var disposed = new ManualResetEventSlim();
        Exception? allocation = null;
        Exception? free = null;
        var owner = new Thread(() =>
        {
            byte* kept = allocator.Allocate(64, 16);
            byte* block = allocator.Allocate(64, 16);
            allocator.Deallocate(block, 64, 16);   // in the stack
            cached.Set();
            disposed.Wait();
            allocation = Record.Exception(() => allocator.Allocate(64, 16));
            free = Record.Exception(() => allocator.Deallocate(kept, 64, 16));
        });
        owner.Start();
        Assert.True(cached.Wait(TimeSpan.FromSeconds(30)));
        allocator.Dispose();
        disposed.Set();
        Assert.True(owner.Join(TimeSpan.FromSeconds(30)));
        Assert.IsType<ObjectDisposedException>(allocation);
        Assert.IsType<ObjectDisposedException>(free);
    }

    [Fact]
    public void Requests_above_4_KiB_or_aligned_above_16_bytes_take_the_heap_path_and_small_blocks_come_back_to_the_stacks()
    {
        using NumaHeapAllocator allocator = Create();
        byte* large = allocator.Allocate(4097, 16);
        byte* aligned = allocator.Allocate(64, 64);
        Assert.Equal(0, (nint)aligned % 64);
        Assert.Equal(0, allocator.GetHeaps().Single().CachedBlockCount);   // neither refilled a stack
        allocator.Deallocate(large, 4097, 16);     // too large for a stack: the heap's cache
        allocator.Deallocate(aligned, 64, 64);     // a small block: the thread's stack, however it was aligned
        Assert.Equal(2, allocator.GetHeaps().Single().CachedBlockCount);
        Assert.True(allocator.Allocate(64, 16) == aligned);
        Assert.True(allocator.Allocate(4097, 16) == large);
        allocator.Deallocate(aligned, 64, 16);
        allocator.Deallocate(large, 4097, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Null(allocator.Validate());
    }

    [Fact]
    public void Waves_of_short_lived_threads_hand_blocks_to_a_long_lived_one_and_everything_adds_up()
    {
        using NumaHeapAllocator allocator = Create(heapsPerNode: 2);
        var handed = new System.Collections.Concurrent.BlockingCollection<(nint Block, int Size, byte Pattern)>(boundedCapacity: 256);
        long freedByReceiver = 0;
        var receiver = new Thread(() =>
        {
            foreach ((nint block, int size, byte pattern) in handed.GetConsumingEnumerable())
            {
                Assert.True(new Span<byte>((byte*)block, size).IndexOfAnyExcept(pattern) < 0, "a handed block was changed");
                allocator.Deallocate((byte*)block, (nuint)size, 16);
                freedByReceiver++;
                if (freedByReceiver % 64 == 0)
                {
                    _ = allocator.Statistics;   // reads every thread's counts while they change
                    _ = allocator.GetHeaps();
                }
            }
        });
        receiver.Start();

        for (int wave = 0; wave < 5; wave++)
        {
            Thread[] workers = [.. Enumerable.Range(0, 4).Select(w => new Thread(() =>
            {
                var random = new Random((wave * 16) + w);
                var mine = new List<(nint, int, byte)>();
                for (int i = 0; i < 2_000; i++)
                {
                    int size = random.Next(1, 5_000);
                    byte pattern = (byte)random.Next(1, 255);
                    byte* block = allocator.Allocate((nuint)size, 16);
                    new Span<byte>(block, size).Fill(pattern);
                    if (random.Next(4) == 0)
                    {
                        handed.Add(((nint)block, size, pattern));
                    }
                    else
                    {
                        mine.Add(((nint)block, size, pattern));
                    }

                    if (mine.Count > 50)
                    {
                        (nint b, int s, byte p) = mine[random.Next(mine.Count)];
                        mine.Remove((b, s, p));
                        Assert.True(new Span<byte>((byte*)b, s).IndexOfAnyExcept(p) < 0, "a kept block was changed");
                        allocator.Deallocate((byte*)b, (nuint)s, 16);
                    }
                }

                foreach ((nint b, int s, byte p) in mine)
                {
                    allocator.Deallocate((byte*)b, (nuint)s, 16);
                }
            }))];
            foreach (Thread worker in workers)
            {
                worker.Start();
            }

            foreach (Thread worker in workers)
            {
                Assert.True(worker.Join(TimeSpan.FromSeconds(60)));
            }
        }

        handed.CompleteAdding();
        Assert.True(receiver.Join(TimeSpan.FromSeconds(60)));
        Assert.True(freedByReceiver > 0);
        AllocatorStatistics statistics = allocator.Statistics;
        Assert.Equal(0, statistics.BytesInUse);
        Assert.Equal(statistics.AllocationCount, statistics.DeallocationCount);
        Assert.Equal(5 * 4 * 2_000, statistics.AllocationCount);
        Assert.All(allocator.GetHeaps(), h => Assert.Equal(0, h.BytesInUse));
        allocator.Trim();   // the workers have exited: their blocks go back
        Assert.Null(allocator.Validate());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_thread_that_stops_using_a_size_gives_its_blocks_of_that_size_back_at_the_next_collections(bool collect)
    {
        using NumaHeapAllocator allocator = Create();
        using var done = new ManualResetEventSlim();
        using var check = new ManualResetEventSlim();
        nint[] first = [];
        var user = new Thread(() =>
        {
            // Ten blocks of 64 B, freed: with the refill's spares, 17 on this thread's stack, none in the heap's cache.
            first = AllocateAndFreeTen(allocator);

            // Then another size only: two collections give back first the spares never used, then
            // the ten blocks (unused since the first collection). Half an interval runs none.
            int pairs = collect ? (2 * NumaHeapThreadCache.CollectionInterval) + 10 : NumaHeapThreadCache.CollectionInterval / 2;
            for (int i = 0; i < pairs; i++)
            {
                allocator.Deallocate(allocator.Allocate(256, 16), 256, 16);
            }

            done.Set();
            check.Wait();   // alive meanwhile: only a collection can have given its stack back
        });
        user.Start();
        Assert.True(done.Wait(TimeSpan.FromSeconds(30)));

        // Another thread of the same heap takes its first block from the heap's cache if it has one
        // (the one given back last), else carves a new one.
        nint taken = 0;
        RunOnNewThread(() =>
        {
            taken = (nint)allocator.Allocate(64, 16);
            allocator.Deallocate((byte*)taken, 64, 16);
        });
        check.Set();
        Assert.True(user.Join(TimeSpan.FromSeconds(30)));
        Assert.Equal(collect, first.Contains(taken));
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Null(allocator.Validate());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Reading_the_statistics_gives_back_the_blocks_of_threads_that_exited(bool read)
    {
        using NumaHeapAllocator allocator = Create();
        allocator.Deallocate(allocator.Allocate(1000, 16), 1000, 16);   // this thread has its state already
        nint[] exited = [];
        RunOnNewThread(() => exited = AllocateAndFreeTen(allocator));   // all on its stack, none in the heap's cache

        if (read)
        {
            Assert.Equal(0, allocator.Statistics.BytesInUse);
        }

        // No new thread registered, so only the read can have given the exited thread's stack back.
        byte* mine = allocator.Allocate(64, 16);
        Assert.Equal(read, exited.Contains((nint)mine));
        allocator.Deallocate(mine, 64, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Null(allocator.Validate());
    }
}
