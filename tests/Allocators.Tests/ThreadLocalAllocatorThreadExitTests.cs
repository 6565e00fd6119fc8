using static AllocHosting.Allocators.Tests.TestThreads;
using static AllocHosting.Allocators.Tests.SlabPageInspection;

namespace AllocHosting.Allocators.Tests;

/// <summary>What a <see cref="ThreadLocalAllocator"/> does when a thread exits: its heap is abandoned, freed into from any thread and released once empty, and its batch of remote frees is never lost.</summary>
public unsafe class ThreadLocalAllocatorThreadExitTests
{
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
        CollectUntil(() => allocator.AbandonedHeapCount == allocator.HeapCount);
        Assert.Equal(1, allocator.AbandonedHeapCount);
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
    public void Batched_remote_frees_of_a_thread_that_exits_are_never_lost()
    {
        // The thread's batch is referenced only by its [ThreadStatic] field: once the thread is
        // gone the batch's finaliser pushes it.
        using var allocator = new ThreadLocalAllocator();
        nint[] blocks = Enumerable.Range(0, 10).Select(_ => (nint)allocator.Allocate(64, 16)).ToArray();
        SlabPage page = PageOf((byte*)blocks[0])!;
        RunOnNewThread(() =>
        {
            foreach (nint block in blocks)
            {
                allocator.Deallocate((byte*)block, 64, 16);
            }

            Assert.Equal(blocks.Length, ThreadLocalAllocator.PendingRemoteFrees);
        });

        CollectUntil(() => blocks.All(b => FreeListsHold(page, (nuint)b)));
        Assert.All(blocks, b => Assert.True(FreeListsHold(page, (nuint)b)));
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

            Assert.Equal(10, ThreadLocalAllocator.PendingRemoteFrees);
        });

        CollectUntil(() => allocator.AbandonedHeapCount == allocator.HeapCount);
        Assert.Equal(1, allocator.AbandonedHeapCount);
        Assert.Equal(1, allocator.HeapCount);

        // Frees into an abandoned heap are not batched; the batched blocks still count as live.
        for (int i = 10; i < blocks.Length; i++)
        {
            allocator.Deallocate((byte*)blocks[i], 64, 16);
        }

        Assert.Equal(10, ThreadLocalAllocator.PendingRemoteFrees);
        Assert.Equal(1, allocator.HeapCount);

        allocator.Collect();
        Assert.Equal(0, ThreadLocalAllocator.PendingRemoteFrees);
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

            Assert.Equal(5, ThreadLocalAllocator.PendingRemoteFrees);
        });

        allocator.Dispose();
        other.Collect(); // pushes this thread's batch: its heap is gone, so it is dropped
        Assert.Equal(0, ThreadLocalAllocator.PendingRemoteFrees);
    }
}
