using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

public unsafe class ThreadLocalAllocatorTests
{
    private const nuint KiB = 1024;

    // Every class boundary: the class sizes and one byte more.
    private static readonly int[] ClassSizes = Enumerable.Range(0, SlabSizeClasses.Count).Select(SlabSizeClasses.SizeOf).ToArray();

    [Fact]
    public void Size_classes_are_16_byte_steps_then_four_per_power_of_two()
    {
        Assert.Equal(16, ClassSizes[0]);
        Assert.Equal(128, ClassSizes[7]);
        Assert.Equal([160, 192, 224, 256, 320], ClassSizes[8..13]);
        Assert.Equal(256 * 1024, ClassSizes[^1]);
        for (int i = 0; i < ClassSizes.Length; i++)
        {
            Assert.Equal(i, SlabSizeClasses.IndexOf((nuint)ClassSizes[i]));
            if (i + 1 < ClassSizes.Length)
            {
                Assert.Equal(i + 1, SlabSizeClasses.IndexOf((nuint)ClassSizes[i] + 1));
                Assert.True(ClassSizes[i + 1] <= ClassSizes[i] * 1.25 + 16, "a class is at most 25 % (or 16 B) above the previous one");
            }
        }
    }

    [Fact]
    public void Allocate_free_and_reuse_at_every_class_boundary()
    {
        using var allocator = new ThreadLocalAllocator();
        foreach (int classSize in ClassSizes)
        {
            foreach (nuint size in new[] { (nuint)classSize - 1, (nuint)classSize, (nuint)classSize + 1 })
            {
                if (size > allocator.MaximumSlabSize)
                {
                    continue;
                }

                byte* block = allocator.Allocate(size, 8);
                nuint usable = allocator.GetUsableSize(size, 8);
                Assert.True(usable >= size);
                Assert.NotNull(ThreadLocalAllocator.PageOf(block));
                Assert.Equal(usable, ThreadLocalAllocator.PageOf(block)!.BlockSize);
                new Span<byte>(block, (int)usable).Fill(0xA5);
                allocator.Deallocate(block, size, 8);

                byte* again = allocator.Allocate(size, 8);
                Assert.True(block == again, $"a freed {size}-byte block is reused at once (LIFO)");
                allocator.Deallocate(again, usable, 8);
            }
        }

        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Usable_sizes_are_the_class_sizes_and_the_fallback_beyond()
    {
        using var allocator = new ThreadLocalAllocator();

        Assert.Equal(16u, allocator.GetUsableSize(1, 1));
        Assert.Equal(32u, allocator.GetUsableSize(17, 8));
        Assert.Equal(160u, allocator.GetUsableSize(129, 16));
        Assert.Equal(1280u, allocator.GetUsableSize(1025, 16));
        Assert.Equal(256 * KiB, allocator.GetUsableSize(256 * KiB, 16));
        Assert.Equal(allocator.Fallback.GetUsableSize((256 * KiB) + 1, 16), allocator.GetUsableSize((256 * KiB) + 1, 16));
        Assert.Equal(0u, allocator.GetUsableSize(0, 16));
    }

    [Fact]
    public void Alignments_up_to_4_KiB_come_from_slabs_and_larger_ones_from_the_fallback()
    {
        using var allocator = new ThreadLocalAllocator();
        var blocks = new List<(nint Pointer, nuint Size, nuint Alignment)>();
        for (nuint alignment = 1; alignment <= 8 * KiB; alignment <<= 1)
        {
            foreach (nuint size in new nuint[] { 1, 100, 5000 })
            {
                byte* block = allocator.Allocate(size, alignment);
                Assert.True(Allocator.IsAligned((nuint)block, alignment), $"{size} bytes aligned to {alignment}");
                Assert.True(allocator.GetUsableSize(size, alignment) >= size);
                Assert.Equal(alignment <= ThreadLocalAllocator.MaximumSlabAlignment, ThreadLocalAllocator.PageOf(block) is not null);
                Assert.True(allocator.Owns(block));
                new Span<byte>(block, (int)size).Fill(7);
                blocks.Add(((nint)block, size, alignment));
            }
        }

        foreach (var (pointer, size, alignment) in blocks)
        {
            allocator.Deallocate((byte*)pointer, size, alignment);
        }

        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Grow_and_shrink_keep_contents_across_classes_and_the_fallback()
    {
        using var allocator = new ThreadLocalAllocator();
        nuint size = 24;
        byte* block = allocator.Allocate(size, 16);
        Fill(block, size);

        foreach (nuint next in new nuint[] { 30, 100, 5000, 300 * KiB, 1024 * KiB, 200 * KiB, 3000, 20 })
        {
            nuint kept = Math.Min(size, next);
            block = next > size
                ? allocator.GrowingReallocate(block, size, next, 16)
                : allocator.ShrinkingReallocate(block, size, next, 16);
            Check(block, kept);
            Assert.Equal(next <= allocator.MaximumSlabSize, ThreadLocalAllocator.PageOf(block) is not null);
            Fill(block, next);
            size = next;
        }

        allocator.Deallocate(block, size, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Grow_in_place_succeeds_within_the_class_only()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(100, 16);

        Assert.True(allocator.TryGrowInPlace(block, 100, 112, 16)); // 100 bytes take a 112-byte block
        Assert.False(allocator.TryGrowInPlace(block, 112, 113, 16));
        Assert.True(allocator.TryShrinkInPlace(block, 112, 10, 16));

        allocator.Deallocate(block, 10, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Free_of_foreign_pointer_throws_and_changes_nothing()
    {
        using var allocator = new ThreadLocalAllocator();
        using var other = new ThreadLocalAllocator();
        byte* mine = allocator.Allocate(64, 16);
        byte* theirs = other.Allocate(64, 16);
        byte* native = (byte*)NativeMemory.Alloc(64);
        try
        {
            var before = allocator.Statistics;

            Assert.Throws<ArgumentException>(() => allocator.Deallocate(native, 64, 16));
            Assert.Throws<ArgumentException>(() => allocator.Deallocate(theirs, 64, 16));
            Assert.Throws<ArgumentException>(() => allocator.Deallocate(mine + 16, 16, 16)); // interior pointer
            Assert.Throws<ArgumentException>(() => allocator.Deallocate(mine, 65, 16));      // larger than its block
            Assert.False(allocator.Owns(native));
            Assert.False(allocator.Owns(theirs));

            Assert.Equal(before, allocator.Statistics);
            allocator.Deallocate(mine, 64, 16);
            other.Deallocate(theirs, 64, 16);
        }
        finally
        {
            NativeMemory.Free(native);
        }
    }

    [Fact]
    public void Double_free_throws_and_changes_nothing()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(48, 16);
        allocator.Deallocate(block, 48, 16);
        var before = allocator.Statistics;

        var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 48, 16));
        Assert.Contains("double free", error.Message, StringComparison.Ordinal);

        Assert.Equal(before, allocator.Statistics);
        byte* first = allocator.Allocate(48, 16);
        byte* second = allocator.Allocate(48, 16);
        Assert.True(first != second, "the block was not put on the free list twice");
        allocator.Deallocate(first, 48, 16);
        allocator.Deallocate(second, 48, 16);
    }

    [Fact]
    public void Double_free_from_another_thread_throws()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(48, 16);
        allocator.Deallocate(block, 48, 16);

        Exception? error = RunOnNewThread(() => allocator.Deallocate(block, 48, 16), catchException: true);

        Assert.IsType<ArgumentException>(error);
    }

    [Fact]
    public void Never_allocated_block_of_a_page_is_rejected_as_free()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(64, 16);

        // The next block of the page is carved but was never handed out.
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block + 64, 64, 16));

        allocator.Deallocate(block, 64, 16);
    }

    [Fact]
    public void Over_size_requests_go_to_the_fallback_and_frees_find_their_way_back()
    {
        using var fallback = new MemoryMapAllocator();
        using var allocator = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { Fallback = fallback });

        byte* large = allocator.Allocate(1024 * KiB, 64);
        byte* aligned = allocator.Allocate(100, 64 * KiB);
        Assert.Equal(2, fallback.LiveBlockCount);
        Assert.True(fallback.Owns(large));
        Assert.True(allocator.Owns(large));
        Assert.True(Allocator.IsAligned((nuint)aligned, 64 * KiB));

        large = allocator.GrowingReallocate(large, 1024 * KiB, 2048 * KiB, 64);
        Assert.True(fallback.Owns(large));

        allocator.Deallocate(large, 2048 * KiB, 64);
        allocator.Deallocate(aligned, 100, 64 * KiB);
        Assert.Equal(0, fallback.LiveBlockCount);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [LinuxFact]
    public void Slab_segments_and_over_size_blocks_are_registered_for_address_routing()
    {
        // OwnerRegistry is how SwitchableAllocator routes a free by address (W-SW2): every byte this
        // allocator hands out must name an owner while the block is live: this allocator for slab
        // segments, the default fallback (a memory map allocator, which registers itself) for over-size blocks.
        using var allocator = new ThreadLocalAllocator();
        IAllocator fallback = allocator.Fallback;
        Assert.IsType<MemoryMapAllocator>(fallback);
        byte* small = allocator.Allocate(64, 16);
        byte* large = allocator.Allocate(1024 * KiB, 16);

        Assert.Same(allocator, OwnerRegistry.Find((nuint)small));
        Assert.Same(fallback, OwnerRegistry.Find((nuint)large));
        Assert.Same(fallback, OwnerRegistry.Find((nuint)large + (1024 * KiB) - 1));

        byte* grown = allocator.GrowingReallocate(large, 1024 * KiB, 4096 * KiB, 16);
        Assert.Same(fallback, OwnerRegistry.Find((nuint)grown + (4096 * KiB) - 1));
        if (grown != large)
        {
            Assert.Null(OwnerRegistry.Find((nuint)large));
        }

        byte* shrunk = allocator.ShrinkingReallocate(grown, 4096 * KiB, 512 * KiB, 16);
        Assert.Same(fallback, OwnerRegistry.Find((nuint)shrunk));
        Assert.Null(OwnerRegistry.Find((nuint)shrunk + (1024 * KiB)));

        allocator.Deallocate(shrunk, 512 * KiB, 16);
        Assert.Null(OwnerRegistry.Find((nuint)shrunk));
        allocator.Deallocate(small, 64, 16);
        allocator.Collect();
        Assert.Null(OwnerRegistry.Find((nuint)small));
    }

    [Fact]
    public void Exhausted_heap_falls_back_and_frees_are_routed_back()
    {
        using var fallback = new MemoryMapAllocator();
        using var allocator = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions
        {
            Fallback = fallback,
            SegmentSize = 2 << 20,
            MaximumSegmentsPerHeap = 1,
        });

        // A 2 MiB segment holds two 1 MiB pages of four 256 KiB blocks: eight slab blocks.
        var blocks = new List<nint>();
        for (int i = 0; i < 12; i++)
        {
            byte* block = allocator.Allocate(256 * KiB, 16);
            block[0] = (byte)i;
            block[(256 * 1024) - 1] = (byte)i;
            blocks.Add((nint)block);
        }

        Assert.Equal(8, blocks.Count(b => ThreadLocalAllocator.PageOf((byte*)b) is not null));
        Assert.Equal(4, fallback.LiveBlockCount);
        Assert.Equal(2L << 20, allocator.MappedBytes);

        foreach (nint block in blocks)
        {
            allocator.Deallocate((byte*)block, 256 * KiB, 16);
        }

        Assert.Equal(0, fallback.LiveBlockCount);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Remote_frees_are_drained_and_their_memory_reused()
    {
        using var allocator = new ThreadLocalAllocator();
        var first = new HashSet<nint>();
        for (int i = 0; i < 512; i++)
        {
            first.Add((nint)allocator.Allocate(64, 16));
        }

        long mapped = allocator.MappedBytes;
        RunOnNewThread(() =>
        {
            foreach (nint block in first)
            {
                allocator.Deallocate((byte*)block, 64, 16);
            }
        });
        Assert.Equal(512 * 64, allocator.Statistics.BytesInUse); // counted when the owner drains

        var second = new HashSet<nint>();
        for (int i = 0; i < 512; i++)
        {
            second.Add((nint)allocator.Allocate(64, 16));
        }

        Assert.Equal(first, second);
        Assert.Equal(mapped, allocator.MappedBytes);
        Assert.Equal(512 * 64, allocator.Statistics.BytesInUse);
        Assert.Equal(1, allocator.HeapCount); // the freeing thread got no heap

        foreach (nint block in second)
        {
            allocator.Deallocate((byte*)block, 64, 16);
        }

        allocator.Collect();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(0, allocator.MappedBytes);
    }

    [Fact]
    public void Cross_thread_free_stress_loses_nothing()
    {
        // Two producers allocate blocks with a canary derived from their address; two consumers on
        // other threads check the canary and free. Afterwards every heap is drained and nothing is in use.
        using var allocator = new ThreadLocalAllocator();
        const int PerProducer = 20_000;
        var queue = new BlockingCollection<(nint Pointer, int Size)>(boundedCapacity: 1024);
        using var consumersDone = new ManualResetEventSlim();
        using var producersAdded = new CountdownEvent(2);
        int badCanaries = 0;
        int consumersFlushing = 0;

        var producers = Enumerable.Range(0, 2).Select(p => new Thread(() =>
        {
            var random = new Random(p);
            for (int i = 0; i < PerProducer; i++)
            {
                int size = random.Next(3) switch { 0 => random.Next(1, 129), 1 => random.Next(129, 4097), _ => random.Next(4097, 70_000) };
                byte* block = allocator.Allocate((nuint)size, 16);
                new Span<byte>(block, size).Fill(Canary((nint)block));
                queue.Add(((nint)block, size));
            }

            producersAdded.Signal();
            consumersDone.Wait();
            allocator.Collect();
        })).ToArray();

        var consumers = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            foreach (var (pointer, size) in queue.GetConsumingEnumerable())
            {
                if (new ReadOnlySpan<byte>((void*)pointer, size).IndexOfAnyExcept(Canary(pointer)) >= 0)
                {
                    Interlocked.Increment(ref badCanaries);
                }

                allocator.Deallocate((byte*)pointer, (nuint)size, 16);
            }

            // One consumer hands back its batch of remote frees itself; the other's is flushed
            // by the finaliser once the thread is gone (below).
            if (Interlocked.Increment(ref consumersFlushing) == 1)
            {
                allocator.Collect();
            }
        })).ToArray();

        foreach (var thread in producers.Concat(consumers))
        {
            thread.Start();
        }

        // Producers keep their heaps (and threads) until the consumers have freed everything, then drain.
        producersAdded.Wait();
        queue.CompleteAdding();
        foreach (var consumer in consumers)
        {
            consumer.Join();
        }

        for (int i = 0; i < 5; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Thread.Sleep(5);
        }

        consumersDone.Set();
        foreach (var producer in producers)
        {
            producer.Join();
        }

        Assert.Equal(0, badCanaries);
        var stats = allocator.Statistics;
        Assert.Equal(2 * PerProducer, stats.AllocationCount);
        Assert.Equal(2 * PerProducer, stats.DeallocationCount);
        Assert.Equal(0, stats.BytesInUse);
    }

    [Fact]
    public void Blocks_can_be_resized_and_freed_on_another_thread()
    {
        using var allocator = new ThreadLocalAllocator();
        var blocks = new nint[200];
        for (int i = 0; i < blocks.Length; i++)
        {
            byte* block = allocator.Allocate(100, 16);
            Fill(block, 100);
            blocks[i] = (nint)block;
        }

        ThreadHeap mine = allocator.FindCurrentHeap()!;
        RunOnNewThread(() =>
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                nuint target = i % 2 == 0 ? 5000 : 300 * KiB;
                byte* grown = allocator.GrowingReallocate((byte*)blocks[i], 100, target, 16);
                Check(grown, 100);
                Assert.NotSame(mine, ThreadLocalAllocator.PageOf(grown)?.Heap);
                byte* shrunk = allocator.ShrinkingReallocate(grown, target, 50, 16);
                Check(shrunk, 50);
                allocator.Deallocate(shrunk, 50, 16);
            }

            allocator.Collect();
        });

        allocator.Collect();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(allocator.Statistics.AllocationCount, allocator.Statistics.DeallocationCount);
    }

    [Fact]
    public void Thread_exit_releases_the_heap_once_its_blocks_are_freed_W_SW4()
    {
        // W-SW4: the seed leaked a thread's whole region when the thread ended.
        using var allocator = new ThreadLocalAllocator();
        var blocks = new List<nint>();
        RunOnNewThread(() =>
        {
            for (int i = 0; i < 1000; i++)
            {
                blocks.Add((nint)allocator.Allocate((nuint)(16 + (i % 50) * 100), 16));
            }
        });
        Assert.Equal(1, allocator.HeapCount);
        Assert.True(allocator.MappedBytes > 0);

        foreach (nint block in blocks.Take(500))
        {
            Assert.True(allocator.Owns((byte*)block));
        }

        // Free from this thread (remote frees), then let the dead thread's lifetime be finalised.
        for (int i = 0; i < blocks.Count; i++)
        {
            allocator.Deallocate((byte*)blocks[i], (nuint)(16 + (i % 50) * 100), 16);
        }

        // This thread batched its last remote frees; Collect hands them back.
        allocator.Collect();
        CollectUntil(() => allocator.HeapCount == 0);

        Assert.Equal(0, allocator.HeapCount);
        Assert.Equal(0, allocator.MappedBytes);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(1000, allocator.Statistics.DeallocationCount);
    }

    [Fact]
    public void Abandoned_heap_is_released_by_the_last_free_after_its_thread_died()
    {
        using var allocator = new ThreadLocalAllocator();
        var blocks = new List<nint>();
        RunOnNewThread(() =>
        {
            for (int i = 0; i < 100; i++)
            {
                blocks.Add((nint)allocator.Allocate(1000, 16));
            }
        });

        // Abandoned first: the heap stays while blocks are live.
        CollectUntil(() => allocator.FindHeapsForTesting().All(h => h.IsAbandoned));
        Assert.Equal(1, allocator.HeapCount);
        Assert.True(allocator.MappedBytes > 0);

        for (int i = 0; i < blocks.Count; i++)
        {
            Assert.Equal(1, allocator.HeapCount);
            allocator.Deallocate((byte*)blocks[i], 1000, 16);
        }

        Assert.Equal(0, allocator.HeapCount);
        Assert.Equal(0, allocator.MappedBytes);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Frees_racing_with_thread_exit_never_strand_a_heap()
    {
        // Remote frees race with the finaliser that abandons the heap: whichever comes last
        // must find the heap empty and release it.
        using var allocator = new ThreadLocalAllocator();
        for (int round = 0; round < 10; round++)
        {
            var blocks = new nint[2000];
            RunOnNewThread(() =>
            {
                for (int i = 0; i < blocks.Length; i++)
                {
                    blocks[i] = (nint)allocator.Allocate((nuint)(16 + (i % 300)), 16);
                }
            });

            var freers = Enumerable.Range(0, 2).Select(part => new Thread(() =>
            {
                for (int i = part; i < blocks.Length; i += 2)
                {
                    allocator.Deallocate((byte*)blocks[i], (nuint)(16 + (i % 300)), 16);
                }
            })).ToArray();
            foreach (var freer in freers)
            {
                freer.Start();
            }

            GC.Collect();
            GC.WaitForPendingFinalizers();
            foreach (var freer in freers)
            {
                freer.Join();
            }

            CollectUntil(() => allocator.HeapCount == 0);
            Assert.Equal(0, allocator.HeapCount);
            Assert.Equal(0, allocator.MappedBytes);
        }

        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(20_000, allocator.Statistics.DeallocationCount);
    }

    [Fact]
    public void Remote_frees_are_batched_and_pushed_together_when_the_batch_fills()
    {
        using var allocator = new ThreadLocalAllocator();
        int n = RemoteFreeBatch.MaximumBlocks;
        nint[] blocks = Enumerable.Range(0, n + 1).Select(_ => (nint)allocator.Allocate(64, 16)).ToArray();
        SlabPage page = ThreadLocalAllocator.PageOf((byte*)blocks[0])!;
        Assert.All(blocks, b => Assert.Same(page, ThreadLocalAllocator.PageOf((byte*)b)));

        RunOnNewThread(() =>
        {
            for (int i = 0; i < n - 1; i++)
            {
                allocator.Deallocate((byte*)blocks[i], 64, 16);
            }

            Assert.Equal(n - 1, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
            Assert.Equal(0u, Volatile.Read(ref page.Remote.Value));

            allocator.Deallocate((byte*)blocks[n - 1], 64, 16);
            Assert.Equal(0, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
            Assert.All(blocks.Take(n), b => Assert.True(page.Heap!.IsOnFreeList(page, (nuint)b)));

            allocator.Deallocate((byte*)blocks[n], 64, 16);
            Assert.Equal(1, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
            allocator.Collect();
            Assert.Equal(0, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
        });

        Assert.All(blocks, b => Assert.True(page.Heap!.IsOnFreeList(page, (nuint)b)));
        allocator.Collect();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Freeing_into_another_page_or_allocating_slowly_pushes_the_batch_first()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* small = allocator.Allocate(64, 16);
        byte* medium = allocator.Allocate(1024, 16);
        SlabPage smallPage = ThreadLocalAllocator.PageOf(small)!;
        SlabPage mediumPage = ThreadLocalAllocator.PageOf(medium)!;
        Assert.NotSame(smallPage, mediumPage);

        RunOnNewThread(() =>
        {
            allocator.Deallocate(small, 64, 16);
            Assert.False(smallPage.Heap!.IsOnFreeList(smallPage, (nuint)small));
            allocator.Deallocate(medium, 1024, 16);
            Assert.True(smallPage.Heap!.IsOnFreeList(smallPage, (nuint)small));
            Assert.Equal(1, ThreadLocalAllocator.CurrentRemoteBatch!.Count);

            // This thread's first allocation takes the slow path (it creates the thread's heap).
            byte* own = allocator.Allocate(32, 16);
            Assert.Equal(0, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
            Assert.True(mediumPage.Heap!.IsOnFreeList(mediumPage, (nuint)medium));
            allocator.Deallocate(own, 32, 16);
        });
    }

    [Fact]
    public void Large_blocks_are_pushed_at_once()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(64 * KiB, 16);
        SlabPage page = ThreadLocalAllocator.PageOf(block)!;
        RunOnNewThread(() =>
        {
            allocator.Deallocate(block, 64 * KiB, 16);
            Assert.Equal(0, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
        });
        Assert.True(page.Heap!.IsOnFreeList(page, (nuint)block));
    }

    [Fact]
    public void Batched_remote_frees_of_a_thread_that_exits_are_never_lost()
    {
        // The thread's batch is referenced only by its [ThreadStatic] field: once the thread is
        // gone the batch's finaliser pushes it.
        using var allocator = new ThreadLocalAllocator();
        nint[] blocks = Enumerable.Range(0, 10).Select(_ => (nint)allocator.Allocate(64, 16)).ToArray();
        SlabPage page = ThreadLocalAllocator.PageOf((byte*)blocks[0])!;
        RunOnNewThread(() =>
        {
            foreach (nint block in blocks)
            {
                allocator.Deallocate((byte*)block, 64, 16);
            }

            Assert.Equal(blocks.Length, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
        });

        CollectUntil(() => blocks.All(b => page.Heap!.IsOnFreeList(page, (nuint)b)));
        Assert.All(blocks, b => Assert.True(page.Heap!.IsOnFreeList(page, (nuint)b)));
        allocator.Collect();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(blocks.Length, allocator.Statistics.DeallocationCount);
    }

    [Fact]
    public void Heap_abandoned_while_another_thread_holds_a_batch_of_its_blocks_is_released_once_the_batch_is_pushed()
    {
        using var allocator = new ThreadLocalAllocator();
        allocator.Collect(); // pushes whatever this test thread batched before
        nint[] blocks = AllocateOnLiveOwner(allocator, 20, 64, owned =>
        {
            // The owner is alive: these frees are batched by this thread.
            for (int i = 0; i < 10; i++)
            {
                allocator.Deallocate((byte*)owned[i], 64, 16);
            }

            Assert.Equal(10, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
        });

        CollectUntil(() => allocator.FindHeapsForTesting().All(h => h.IsAbandoned));
        Assert.True(allocator.FindHeapsForTesting().Single().IsAbandoned);

        // Frees into an abandoned heap are not batched; the batched blocks still count as live.
        for (int i = 10; i < blocks.Length; i++)
        {
            allocator.Deallocate((byte*)blocks[i], 64, 16);
        }

        Assert.Equal(10, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
        Assert.Equal(1, allocator.HeapCount);

        allocator.Collect();
        Assert.Equal(0, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
        Assert.Equal(0, allocator.HeapCount);
        Assert.Equal(0, allocator.MappedBytes);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(20, allocator.Statistics.DeallocationCount);
    }

    [Fact]
    public void Batch_of_a_disposed_allocator_is_dropped_without_touching_its_memory()
    {
        using var other = new ThreadLocalAllocator();
        var allocator = new ThreadLocalAllocator();
        allocator.Collect();
        AllocateOnLiveOwner(allocator, 5, 64, owned =>
        {
            foreach (nint block in owned)
            {
                allocator.Deallocate((byte*)block, 64, 16);
            }

            Assert.Equal(5, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
        });

        allocator.Dispose();
        other.Collect(); // pushes this thread's batch: its heap is gone, so it is dropped
        Assert.Equal(0, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
    }

    [Fact]
    public void Double_free_of_a_batched_block_throws_and_changes_nothing()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(64, 16);
        RunOnNewThread(() =>
        {
            allocator.Deallocate(block, 64, 16);
            Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 64, 16));
            Assert.Equal(1, ThreadLocalAllocator.CurrentRemoteBatch!.Count);
            allocator.Collect();
        });

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 64, 16));
        allocator.Collect();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Fields_written_per_operation_are_two_cache_lines_from_everything_else()
    {
        // False sharing made two threads barely faster than one: a page's owner fields shared a
        // line with the fields remote freers read on every free, and the GC puts objects of
        // different threads next to each other. Offsets are measured from the object's first field.
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(64, 16);
        SlabPage page = ThreadLocalAllocator.PageOf(block)!;
        ThreadHeap heap = page.Heap!;

        ref byte pageStart = ref Unsafe.As<StrongBox<byte>>(page).Value;
        long[] owner = [Offset(ref pageStart, ref page.Free), Offset(ref pageStart, ref page.Unformatted), Offset(ref pageStart, ref page.Used)];
        long[] shared =
        [
            Offset(ref pageStart, ref Unsafe.AsRef(in page.Start)), Offset(ref pageStart, ref Unsafe.AsRef(in page.Limit)),
            Offset(ref pageStart, ref Unsafe.AsRef(in page.BlockSize)), Offset(ref pageStart, ref Unsafe.AsRef(in page.DivisibilityMagic)),
            Offset(ref pageStart, ref page.Remote.Value),
        ];
        foreach (long o in owner)
        {
            Assert.True(o >= 128, $"owner field at {o} is within two lines of the object's start");
            Assert.All(shared, x => Assert.True(Math.Abs(x - o) >= 128, $"owner field at {o} and shared field at {x}"));
        }

        long remote = Offset(ref pageStart, ref page.Remote.Value);
        Assert.True(remote >= 128, "the remote list head is two lines from the object's start");

        ref byte heapStart = ref Unsafe.As<StrongBox<byte>>(heap).Value;
        long count = Offset(ref heapStart, ref heap.AllocationCount);
        long bytes = Offset(ref heapStart, ref heap.TotalBytesAllocated);
        Assert.True(count >= 128 && bytes >= 128, $"heap counters at {count} and {bytes}");
        allocator.Deallocate(block, 64, 16);

        static long Offset<T>(ref byte start, ref T field) => (long)Unsafe.ByteOffset(ref start, ref Unsafe.As<T, byte>(ref field));
    }

    [Fact]
    public void Two_threads_have_two_heaps_that_never_share_a_block()
    {
        using var allocator = new ThreadLocalAllocator();
        using var barrier = new Barrier(2);
        var sets = new ConcurrentBag<(ThreadHeap Heap, nint[] Blocks, ThreadHeap?[] PageHeaps)>();
        int heapsWhileBothRun = -1;
        var threads = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            barrier.SignalAndWait();
            var blocks = new nint[2000];
            for (int i = 0; i < blocks.Length; i++)
            {
                blocks[i] = (nint)allocator.Allocate((nuint)(16 << (i % 8)), 16);
            }

            // The heap of each block's page, read on the allocating thread while the blocks are live
            // (null when the block is on no slab page); checked on the test thread.
            var pageHeaps = new ThreadHeap?[blocks.Length];
            for (int i = 0; i < blocks.Length; i++)
            {
                pageHeaps[i] = ThreadLocalAllocator.PageOf((byte*)blocks[i])?.Heap;
            }

            sets.Add((allocator.FindCurrentHeap()!, blocks, pageHeaps));

            // Counted while both threads are alive: once they exit, a garbage collection (other tests
            // run in parallel) may finalise their heaps' tokens and release the empty heaps.
            barrier.SignalAndWait();
            Interlocked.CompareExchange(ref heapsWhileBothRun, allocator.HeapCount, -1);
            barrier.SignalAndWait();
            for (int i = 0; i < blocks.Length; i++)
            {
                allocator.Deallocate((byte*)blocks[i], (nuint)(16 << (i % 8)), 16);
            }

            allocator.Collect();
        })).ToArray();
        foreach (var thread in threads)
        {
            thread.Start();
        }

        foreach (var thread in threads)
        {
            thread.Join();
        }

        var (a, b) = (sets.First(), sets.Last());
        Assert.NotSame(a.Heap, b.Heap);
        Assert.Empty(a.Blocks.Intersect(b.Blocks));
        Assert.NotNull(a.Heap);
        Assert.NotNull(b.Heap);
        Assert.All(a.PageHeaps, h => Assert.Same(a.Heap, h));
        Assert.All(b.PageHeaps, h => Assert.Same(b.Heap, h));
        Assert.Equal(2, heapsWhileBothRun);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Model_based_sequences_on_one_thread()
    {
        // Checks the allocator against AllocatorModel's reference model (a list of live blocks with
        // fill patterns); slabs up to 2 KiB so that sizes up to 8 KiB cross into the fallback.
        long steps = AllocatorModel.Run(
            new ModelSettings { MaxSize = 8192, MaxAlignmentLog2 = 13, Iterations = 120 },
            () => new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { MaximumSlabSize = 2048 }),
            afterAllFreed: allocator =>
            {
                Assert.Equal(0, allocator.Statistics.BytesInUse);
                allocator.Collect();
                Assert.Equal(0, allocator.MappedBytes);
            });

        Assert.True(steps >= 3000, $"only {steps} steps ran");
    }

    [Fact]
    public void Model_based_sequences_with_a_heap_that_runs_out_of_segments()
    {
        // The same reference model as above, with one 2 MiB segment per heap and sizes up to
        // 300 KiB, so that exhaustion sends slab-sized requests to the fallback and growth and
        // shrinking cross between slabs and the fallback in both directions.
        using var fallback = new MemoryMapAllocator();
        long steps = AllocatorModel.Run(
            new ModelSettings { MaxSize = 300_000, MaxAlignmentLog2 = 6, Iterations = 40 },
            () => new ThreadLocalAllocator(new ThreadLocalAllocatorOptions
            {
                SegmentSize = 2 << 20,
                MaximumSegmentsPerHeap = 1,
                Fallback = fallback,
            }),
            afterAllFreed: allocator =>
            {
                Assert.Equal(0, allocator.Statistics.BytesInUse);
                Assert.Equal(0, fallback.LiveBlockCount);
            });

        Assert.True(steps >= 1000, $"only {steps} steps ran");
        Assert.True(fallback.Statistics.AllocationCount > 0, "some requests fell back");
    }

    [LinuxFact]
    public void Heap_memory_lands_on_the_node_its_policy_names_chosen_on_the_creating_thread()
    {
        int node = NumaTopology.Current.Nodes[0].Id;
        int? selectorThread = null;
        using var allocator = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions
        {
            NumaPolicySelector = () =>
            {
                selectorThread = Environment.CurrentManagedThreadId;
                return NumaPolicy.Preferred(node);
            },
        });

        int allocatingThread = 0;
        NumaPolicy? policy = null;
        int? placed = null;
        RunOnNewThread(() =>
        {
            allocatingThread = Environment.CurrentManagedThreadId;
            byte* block = allocator.Allocate(4096, 4096);
            block[0] = 1;
            placed = MemoryMapSource.GetNodeOfAddress(block);
            policy = allocator.FindCurrentHeap()!.Policy;
            allocator.Deallocate(block, 4096, 4096);
            allocator.Collect();
        });

        Assert.Equal(allocatingThread, selectorThread);
        Assert.Equal(NumaPolicy.Preferred(node), policy);
        Assert.True(placed is null || placed == node, $"the page is on node {placed}, the policy names {node}");
        Assert.True(allocator.GetMappedBytesByNode().Values.All(v => v == 0));
    }

    [Fact]
    public void Default_policy_comes_from_the_creating_threads_topology()
    {
        using var allocator = new ThreadLocalAllocator();
        NumaPolicy? expected = null;
        NumaPolicy? actual = null;
        RunOnNewThread(() =>
        {
            byte* block = allocator.Allocate(100, 16);
            expected = NumaTopology.Current.ForCurrentThread();
            actual = allocator.FindCurrentHeap()!.Policy;
            allocator.Deallocate(block, 100, 16);
        });

        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Portable_source_works_without_memory_mapping()
    {
        using var allocator = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { UseMemoryMap = false });
        byte* block = allocator.Allocate(300, 16);
        Assert.IsType<NativeMemorySource>(allocator.FindCurrentHeap()!.Source);
        Assert.True(Allocator.IsAligned((nuint)block, 16));
        allocator.Deallocate(block, 300, 16);
        allocator.Collect();
        Assert.Equal(0, allocator.MappedBytes);
    }

    [Fact]
    public void Statistics_count_slab_and_fallback_blocks()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* small = allocator.Allocate(100, 16);
        byte* large = allocator.Allocate(512 * KiB, 16);
        var stats = allocator.Statistics;

        Assert.Equal(2, stats.AllocationCount);
        Assert.Equal(100 + (512 * 1024), stats.TotalBytesAllocated);
        Assert.Equal(112 + (long)allocator.Fallback.GetUsableSize(512 * KiB, 16), stats.BytesInUse);

        allocator.Deallocate(small, 100, 16);
        allocator.Deallocate(large, 512 * KiB, 16);
        Assert.Equal(2, allocator.Statistics.DeallocationCount);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Dispose_unmaps_everything_and_later_use_throws()
    {
        var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(100, 16);
        Assert.True(allocator.MappedBytes > 0);

        allocator.Dispose();

        Assert.Equal(0, allocator.MappedBytes);
        Assert.Equal(0, allocator.HeapCount);
        Assert.False(allocator.Owns(block));
        Assert.Throws<ObjectDisposedException>(() => allocator.Allocate(100, 16));
    }

    [Fact]
    public void Invalid_options_are_rejected()
    {
        Assert.Throws<ArgumentException>(() => new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { SegmentSize = 3 << 20 }));
        Assert.Throws<ArgumentException>(() => new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { SegmentSize = 1 << 20 }));
        Assert.Throws<ArgumentException>(() => new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { MaximumSlabSize = 512 * 1024 }));
        Assert.Throws<ArgumentException>(() => new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { MaximumSegmentsPerHeap = 0 }));
    }

    [Fact]
    public void Type_doc_example_runs()
    {
        // The example in ThreadLocalAllocator's doc comment.
        ThreadLocalAllocator allocator = ThreadLocalAllocator.Shared;
        byte* buffer = allocator.Allocate(1024, 16);                 // from this thread's heap
        buffer[0] = 42;
        nint address = (nint)buffer;
        var other = new Thread(() => allocator.Deallocate((byte*)address, 1024, 16)); // routed back, lock-free
        other.Start();
        other.Join();

        // The other thread batched the free; its batch is pushed once the thread is gone.
        var page = ThreadLocalAllocator.PageOf(buffer)!;
        CollectUntil(() => page.Heap!.IsOnFreeList(page, (nuint)buffer));
        Assert.True(page.Heap!.IsOnFreeList(page, (nuint)buffer), "the block went back to the allocating heap");
    }

    [Fact]
    public void Shared_instance_serves_this_thread()
    {
        byte* block = ThreadLocalAllocator.Shared.Allocate(1024, 16);
        Assert.True(ThreadLocalAllocator.Shared.Owns(block));
        ThreadLocalAllocator.Shared.Deallocate(block, 1024, 16);
        Assert.Same(ThreadLocalAllocator.Shared, ThreadLocalAllocator.Shared);
    }

    private static byte Canary(nint pointer) => (byte)((pointer >> 4) ^ (pointer >> 12) | 1);

    private static void Fill(byte* block, nuint size)
    {
        for (nuint i = 0; i < size; i++)
        {
            block[i] = (byte)(i * 7);
        }
    }

    private static void Check(byte* block, nuint size)
    {
        for (nuint i = 0; i < size; i++)
        {
            Assert.True(block[i] == (byte)(i * 7), $"byte {i} of {size} was lost");
        }
    }

    private static Exception? RunOnNewThread(Action action, bool catchException = false)
    {
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        thread.Join();
        if (error is not null && !catchException)
        {
            throw new InvalidOperationException("The thread failed.", error);
        }

        return error;
    }

    // Allocates blocks on a new thread that stays alive (so its heap is not abandoned) while
    // duringLife runs on this thread, then ends.
    private static nint[] AllocateOnLiveOwner(ThreadLocalAllocator allocator, int count, nuint size, Action<nint[]> duringLife)
    {
        var blocks = new nint[count];
        using var allocated = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var owner = new Thread(() =>
        {
            for (int i = 0; i < count; i++)
            {
                blocks[i] = (nint)allocator.Allocate(size, 16);
            }

            allocated.Set();
            release.Wait();
        });
        owner.Start();
        allocated.Wait();
        try
        {
            duringLife(blocks);
        }
        finally
        {
            release.Set();
            owner.Join();
        }

        return blocks;
    }

    private static void CollectUntil(Func<bool> condition)
    {
        for (int i = 0; i < 50 && !condition(); i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Thread.Sleep(10);
        }
    }
}
