using System.Collections.Concurrent;
using static AllocHosting.Allocators.Tests.BlockContents;
using static AllocHosting.Allocators.Tests.TestThreads;
using static AllocHosting.Allocators.Tests.SlabPageInspection;

namespace AllocHosting.Allocators.Tests;

/// <summary>Blocks of a <see cref="ThreadLocalAllocator"/> freed by another thread than the one that allocated them: the remote lists, the per-page batches and their pushes.</summary>
public unsafe class ThreadLocalAllocatorRemoteFreeTests
{
    private const nuint KiB = 1024;

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
                Assert.NotSame(mine, PageOf(grown)?.Heap);
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
    public void Remote_frees_are_batched_and_pushed_together_when_the_batch_fills()
    {
        using var allocator = new ThreadLocalAllocator();
        int n = RemoteFreeBatch.MaximumBlocks;
        nint[] blocks = Enumerable.Range(0, n + 1).Select(_ => (nint)allocator.Allocate(64, 16)).ToArray();
        SlabPage page = PageOf((byte*)blocks[0])!;
        Assert.All(blocks, b => Assert.Same(page, PageOf((byte*)b)));

        RunOnNewThread(() =>
        {
            for (int i = 0; i < n - 1; i++)
            {
                allocator.Deallocate((byte*)blocks[i], 64, 16);
            }

            Assert.Equal(n - 1, ThreadLocalAllocator.PendingRemoteFrees);
            Assert.Equal(0u, Volatile.Read(ref page.Remote.Value));

            allocator.Deallocate((byte*)blocks[n - 1], 64, 16);
            Assert.Equal(0, ThreadLocalAllocator.PendingRemoteFrees);
            Assert.All(blocks.Take(n), b => Assert.True(FreeListsHold(page, (nuint)b)));

            allocator.Deallocate((byte*)blocks[n], 64, 16);
            Assert.Equal(1, ThreadLocalAllocator.PendingRemoteFrees);
            allocator.Collect();
            Assert.Equal(0, ThreadLocalAllocator.PendingRemoteFrees);
        });

        Assert.All(blocks, b => Assert.True(FreeListsHold(page, (nuint)b)));
        allocator.Collect();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Freeing_into_another_page_or_allocating_slowly_pushes_the_batch_first()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* small = allocator.Allocate(64, 16);
        byte* medium = allocator.Allocate(1024, 16);
        SlabPage smallPage = PageOf(small)!;
        SlabPage mediumPage = PageOf(medium)!;
        Assert.NotSame(smallPage, mediumPage);

        RunOnNewThread(() =>
        {
            allocator.Deallocate(small, 64, 16);
            Assert.False(FreeListsHold(smallPage, (nuint)small));
            allocator.Deallocate(medium, 1024, 16);
            Assert.True(FreeListsHold(smallPage, (nuint)small));
            Assert.Equal(1, ThreadLocalAllocator.PendingRemoteFrees);

            // This thread's first allocation takes the slow path (it creates the thread's heap).
            byte* own = allocator.Allocate(32, 16);
            Assert.Equal(0, ThreadLocalAllocator.PendingRemoteFrees);
            Assert.True(FreeListsHold(mediumPage, (nuint)medium));
            allocator.Deallocate(own, 32, 16);
        });
    }

    [Fact]
    public void Large_blocks_are_pushed_at_once()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(64 * KiB, 16);
        SlabPage page = PageOf(block)!;
        RunOnNewThread(() =>
        {
            allocator.Deallocate(block, 64 * KiB, 16);
            Assert.Equal(0, ThreadLocalAllocator.PendingRemoteFrees);
        });
        Assert.True(FreeListsHold(page, (nuint)block));
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
            Assert.Equal(1, ThreadLocalAllocator.PendingRemoteFrees);
            allocator.Collect();
        });

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 64, 16));
        allocator.Collect();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }
}
