using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;
using static AllocHosting.Allocators.Tests.TestThreads;
using static AllocHosting.Allocators.Tests.SlabPageInspection;

namespace AllocHosting.Allocators.Tests;

/// <summary>Where a <see cref="ThreadLocalAllocator"/> puts memory: one heap per thread, its NUMA policy and memory source, and hot fields on cache lines of their own.</summary>
public unsafe class ThreadLocalAllocatorPlacementTests
{
    [Fact]
    public void Fields_written_per_operation_are_two_cache_lines_from_everything_else()
    {
        // False sharing made two threads barely faster than one: a page's owner fields shared a
        // line with the fields remote freers read on every free, and the GC puts objects of
        // different threads next to each other. Offsets are measured from the object's first field.
        using var allocator = new ThreadLocalAllocator();
        byte* block = allocator.Allocate(64, 16);
        SlabPage page = PageOf(block)!;
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
                pageHeaps[i] = PageOf((byte*)blocks[i])?.Heap;
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
            policy = allocator.GetCurrentThreadHeapSnapshot()!.Value.Policy;
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
            actual = allocator.GetCurrentThreadHeapSnapshot()!.Value.Policy;
            allocator.Deallocate(block, 100, 16);
        });

        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Portable_source_works_without_memory_mapping()
    {
        using var allocator = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { UseMemoryMap = false });
        byte* block = allocator.Allocate(300, 16);
        Assert.False(allocator.GetCurrentThreadHeapSnapshot()!.Value.IsMemoryMapped, "the heap's segments come from a NativeMemorySource");
        Assert.True(Allocator.IsAligned((nuint)block, 16));
        allocator.Deallocate(block, 300, 16);
        allocator.Collect();
        Assert.Equal(0, allocator.MappedBytes);
    }
}
