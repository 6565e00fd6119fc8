using AllocHosting.Allocators.MemorySources;
using static AllocHosting.Allocators.Tests.TestThreads;

namespace AllocHosting.Allocators.Tests;

/// <summary>Where a <see cref="NumaHeapAllocator"/> takes and returns memory on a fake two-node machine.</summary>
public unsafe class NumaHeapPlacementTests
{
    [LinuxFact]
    public void There_is_one_heap_per_node_bound_to_it()
    {
        using var machine = new NumaHeapTestMachine();
        using NumaHeapAllocator allocator = machine.CreateAllocator();

        IReadOnlyList<NumaHeapSnapshot> heaps = allocator.GetHeaps();
        Assert.Equal([0, 1], heaps.Select(h => h.Node));
        Assert.Equal(NumaPolicy.Bind(NumaNodeSet.Of(0)), heaps[0].Policy);
        Assert.Equal(NumaPolicy.Bind(NumaNodeSet.Of(1)), heaps[1].Policy);
        Assert.All(heaps, h => Assert.Equal(0, h.SegmentCount));
    }

    [LinuxFact]
    public void A_thread_on_node_1_allocates_from_its_heap_and_a_free_from_node_0_returns_the_block_there()
    {
        using var machine = new NumaHeapTestMachine();
        using NumaHeapAllocator allocator = machine.CreateAllocator();
        nint block = 0;
        RunOnNewThread(() =>
        {
            machine.CurrentCpu = 1;
            Assert.Equal(1, allocator.GetCurrentThreadHeap().Node);
            block = (nint)allocator.Allocate(2000, 16);
            new Span<byte>((byte*)block, 2000).Fill(0x5A);
        });

        Assert.Equal(1, allocator.GetHeapOf((byte*)block)!.Value.Node);
        Assert.Equal(2000, allocator.GetHeaps()[1].BytesInUse);

        RunOnNewThread(() =>
        {
            machine.CurrentCpu = 0;
            Assert.Equal(0, allocator.GetCurrentThreadHeap().Node);
            Assert.True(new Span<byte>((byte*)block, 2000).IndexOfAnyExcept((byte)0x5A) < 0);
            allocator.Deallocate((byte*)block, 2000, 16);
        });

        IReadOnlyList<NumaHeapSnapshot> heaps = allocator.GetHeaps();
        Assert.Equal(0, heaps[0].SegmentCount);                 // node 0's heap never took the block
        Assert.Equal(0, heaps[1].BytesInUse);
        Assert.Equal(2, heaps[1].CachedBlockCount);             // waiting in node 1's cache, beside the block the first thread's cache took as a spare
        allocator.Flush();
        Assert.Equal(1, allocator.GetHeaps()[1].FreeBlockCount); // merged back into node 1's only free block
        Assert.Null(allocator.Validate());

        RunOnNewThread(() =>
        {
            machine.CurrentCpu = 1;
            Assert.Equal(block, (nint)allocator.Allocate(2000, 16));   // lowest fit of node 1's heap: the same block
            allocator.Deallocate((byte*)block, 2000, 16);
        });
    }

    [LinuxFact]
    public void A_thread_that_moves_to_another_node_uses_that_nodes_heap_after_the_recheck_interval()
    {
        using var machine = new NumaHeapTestMachine();
        using NumaHeapAllocator allocator = machine.CreateAllocator();
        RunOnNewThread(() =>
        {
            machine.CurrentCpu = 0;
            byte* first = allocator.Allocate(64, 16);
            Assert.Equal(0, allocator.GetHeapOf(first)!.Value.Node);
            machine.CurrentCpu = 1;
            var nodes = new List<int>();
            for (int i = 0; i < NumaHeapAllocator.NodeRecheckInterval + 1; i++)
            {
                byte* p = allocator.Allocate(64, 16);
                nodes.Add(allocator.GetHeapOf(p)!.Value.Node);
                allocator.Deallocate(p, 64, 16);
            }

            Assert.Equal(0, nodes[0]);
            Assert.Equal(1, nodes[^1]);
            allocator.Deallocate(first, 64, 16);
        });

        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [LinuxFact]
    public void A_thread_that_moves_to_another_node_gives_its_cached_blocks_and_its_counts_back_to_the_old_heap()
    {
        using var machine = new NumaHeapTestMachine();
        using NumaHeapAllocator allocator = machine.CreateAllocator();
        RunOnNewThread(() =>
        {
            // The first allocation refills the thread's stack (16 spares), five more come from it.
            machine.CurrentCpu = 0;
            nint[] kept = [.. Enumerable.Range(0, 6).Select(_ => (nint)allocator.Allocate(64, 16))];
            machine.CurrentCpu = 1;
            for (int i = 0; i < NumaHeapAllocator.NodeRecheckInterval + 1; i++)
            {
                allocator.Deallocate(allocator.Allocate(64, 16), 64, 16);
            }

            // Moved: the 11 spares went back to node 0's own cache, and the counts of the five blocks
            // the stack handed out stay with node 0's heap, whose blocks they are.
            IReadOnlyList<NumaHeapSnapshot> heaps = allocator.GetHeaps();
            Assert.Equal(6 * 64, heaps[0].BytesInUse);
            Assert.Equal(0, heaps[1].BytesInUse);
            Assert.Equal(11, heaps[0].CachedBlockCount);
            Assert.All(kept, block => Assert.Equal(0, allocator.GetHeapOf((byte*)block)!.Value.Node));
            foreach (nint block in kept)
            {
                allocator.Deallocate((byte*)block, 64, 16);   // from node 1: node 0's heap, under its lock
            }

            Assert.All(allocator.GetHeaps(), h => Assert.Equal(0, h.BytesInUse));
        });

        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Null(allocator.Validate());
    }

    [LinuxFact]
    public void Over_size_blocks_are_mapped_from_the_allocating_threads_node()
    {
        using var machine = new NumaHeapTestMachine();
        using NumaHeapAllocator allocator = machine.CreateAllocator();
        RunOnNewThread(() =>
        {
            machine.CurrentCpu = 1;
            byte* big = allocator.Allocate(200_000, 16);
            Assert.Null(allocator.GetHeapOf(big));
            Assert.True(allocator.Owns(big));
            Assert.Equal(0, allocator.GetHeaps().Sum(h => h.SegmentCount));
            allocator.Deallocate(big, 200_000, 16);
        });

        Assert.Equal(0, allocator.MappedBytes);
    }

    [LinuxFact]
    public void Threads_of_one_node_are_spread_over_its_heaps()
    {
        using var machine = new NumaHeapTestMachine();
        using NumaHeapAllocator allocator = machine.CreateAllocator(heapsPerNode: 2);
        // Stripes are handed out round-robin to every thread that allocates (tests run in parallel, so
        // not always consecutively here): eight threads land on both heaps.
        var indexes = new int[8];
        for (int t = 0; t < indexes.Length; t++)
        {
            int thread = t;
            RunOnNewThread(() =>
            {
                machine.CurrentCpu = 1;
                indexes[thread] = allocator.GetCurrentThreadHeap().Index;
            });
        }

        Assert.All(indexes, i => Assert.Equal(1, allocator.GetHeaps()[i].Node));
        Assert.Equal(2, indexes.Distinct().Count());
    }
}
