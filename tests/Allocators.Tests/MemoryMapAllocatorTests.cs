using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

public unsafe class MemoryMapAllocatorTests
{
    private static readonly nuint PageSize = (nuint)Environment.SystemPageSize;

    [LinuxFact]
    public void Allocate_and_free_map_and_unmap_a_block()
    {
        using var allocator = new MemoryMapAllocator();

        byte* block = allocator.Allocate(100, 16);
        new Span<byte>(block, (int)PageSize).Fill(9); // the whole usable size is writable

        Assert.True(Allocator.IsAligned((nuint)block, PageSize));
        Assert.True(allocator.Owns(block));
        Assert.Equal(1, allocator.LiveBlockCount);
        Assert.Equal((long)PageSize, allocator.Source.MappedBytes);
        var stats = allocator.Statistics;
        Assert.Equal((long)PageSize, stats.BytesInUse);
        Assert.Equal(100, stats.TotalBytesAllocated);
        Assert.Equal(1, stats.AllocationCount);
        Assert.Null(stats.Capacity);

        allocator.Deallocate(block, 100, 16);

        Assert.False(allocator.Owns(block));
        Assert.Equal(0, allocator.LiveBlockCount);
        Assert.Equal(0, allocator.Source.MappedBytes);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(1, allocator.Statistics.DeallocationCount);
        Assert.Equal((long)PageSize, allocator.Statistics.PeakBytesInUse);
    }

    [LinuxFact]
    public void Type_doc_example_runs()
    {
        // The example in MemoryMapAllocator's doc comment.
        using var allocator = new MemoryMapAllocator();
        byte* buffer = allocator.Allocate(1 << 20, 64);
        buffer[(1 << 20) - 1] = 42;
        buffer = allocator.GrowingReallocate(buffer, 1 << 20, 8 << 20, 64);   // mremap, no copy
        Assert.Equal(42, buffer[(1 << 20) - 1]);
        allocator.Deallocate(buffer, 8 << 20, 64);
    }

    [LinuxFact]
    public void Source_can_be_chosen_per_thread_from_the_topology()
    {
        var policy = NumaTopology.Current.ForCurrentThread();
        using var allocator = new MemoryMapAllocator(new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = policy }));

        byte* block = allocator.Allocate(PageSize, 8);
        block[0] = 1;

        // The thread may have moved since; the preferred node (or, on one node, the only node) is where the page is.
        Assert.Equal(policy.SingleNode ?? NumaTopology.Current.CurrentNode, MemoryMapSource.GetNodeOfAddress(block));
        allocator.Deallocate(block, PageSize, 8);
    }

    [LinuxFact]
    public void Usable_size_is_the_size_rounded_up_to_pages()
    {
        using var allocator = new MemoryMapAllocator();

        Assert.Equal(PageSize, allocator.GetUsableSize(1, 8));
        Assert.Equal(PageSize, allocator.GetUsableSize(PageSize, 8));
        Assert.Equal(2 * PageSize, allocator.GetUsableSize(PageSize + 1, 8));
        Assert.Equal(2 * PageSize, allocator.GetUsableSize(PageSize + 1, 1u << 20));
        Assert.Equal((nuint)0, allocator.GetUsableSize(0, 8));

        // A block may be freed with any size up to its usable size.
        byte* block = allocator.Allocate(10, 8);
        allocator.Deallocate(block, PageSize, 8);
        Assert.Equal(0, allocator.LiveBlockCount);
    }

    [LinuxFact]
    public void Zero_size_requests_return_the_sentinel_and_map_nothing()
    {
        using var allocator = new MemoryMapAllocator();

        byte* sentinel = allocator.Allocate(0, 64);

        Assert.True(sentinel == Allocator.ZeroSizeSentinel);
        Assert.Equal(0, allocator.Source.MappedBytes);
        allocator.Deallocate(sentinel, 0, 64);
    }

    [LinuxFact]
    public void Grow_and_shrink_keep_contents()
    {
        using var allocator = new MemoryMapAllocator();
        nuint size = 3 * PageSize;
        byte* block = allocator.Allocate(size, 64);
        FillPattern(block, size);

        byte* grown = allocator.GrowingReallocate(block, size, 4096 * PageSize, 64);
        AssertPattern(grown, size);
        grown[(4096 * PageSize) - 1] = 1;
        Assert.Equal(4096 * (long)PageSize, allocator.Statistics.BytesInUse);
        Assert.True(allocator.Owns(grown));

        byte* shrunk = allocator.ShrinkingReallocate(grown, 4096 * PageSize, PageSize + 1, 64);
        Assert.True(shrunk == grown, "shrinking keeps the address");
        AssertPattern(shrunk, PageSize + 1);
        Assert.Equal(2 * (long)PageSize, allocator.Statistics.BytesInUse);
        Assert.Equal(2 * (long)PageSize, allocator.Source.MappedBytes);

        byte* again = allocator.Reallocate(shrunk, PageSize + 1, 5 * PageSize, 64);
        AssertPattern(again, PageSize + 1);
        Assert.True(allocator.Reallocate(again, 5 * PageSize, 0, 64) == Allocator.ZeroSizeSentinel);
        Assert.Equal(0, allocator.LiveBlockCount);
        Assert.Equal(0, allocator.Source.MappedBytes);
    }

    [LinuxFact]
    public void Growing_within_the_usable_size_keeps_the_address_without_remapping()
    {
        using var allocator = new MemoryMapAllocator();
        byte* block = allocator.Allocate(10, 8);

        Assert.True(allocator.GrowingReallocate(block, 10, PageSize, 8) == block);
        Assert.True(allocator.TryGrowInPlace(block, PageSize, PageSize, 8));
        Assert.Equal((long)PageSize, allocator.Statistics.BytesInUse);
        allocator.Deallocate(block, PageSize, 8);
    }

    [LinuxFact]
    public void Grow_in_place_either_extends_the_mapping_or_changes_nothing()
    {
        using var allocator = new MemoryMapAllocator();

        // A page-sized block with a large alignment has its over-mapped tail unmapped, so the pages after it are usually free.
        byte* block = allocator.Allocate(PageSize, 1u << 20);
        FillPattern(block, PageSize);

        if (allocator.TryGrowInPlace(block, PageSize, 4 * PageSize, 1u << 20))
        {
            block[(4 * PageSize) - 1] = 1;
            Assert.Equal(4 * (long)PageSize, allocator.Statistics.BytesInUse);
            allocator.Deallocate(block, 4 * PageSize, 1u << 20);
        }
        else
        {
            Assert.Equal((long)PageSize, allocator.Statistics.BytesInUse);
            AssertPattern(block, PageSize);
            allocator.Deallocate(block, PageSize, 1u << 20);
        }

        Assert.Equal(0, allocator.Source.MappedBytes);
    }

    [LinuxFact]
    public void Shrink_in_place_always_succeeds_and_gives_pages_back()
    {
        using var allocator = new MemoryMapAllocator();
        byte* block = allocator.Allocate(8 * PageSize, 8);
        FillPattern(block, 8 * PageSize);

        Assert.True(allocator.TryShrinkInPlace(block, 8 * PageSize, 2 * PageSize, 8));

        AssertPattern(block, 2 * PageSize);
        Assert.Equal(2 * (long)PageSize, allocator.Statistics.BytesInUse);
        Assert.Equal(2 * (long)PageSize, allocator.Source.MappedBytes);
        allocator.Deallocate(block, 2 * PageSize, 8);
    }

    [LinuxFact]
    public void Free_of_foreign_pointer_throws_and_changes_nothing()
    {
        using var allocator = new MemoryMapAllocator();
        byte* mine = allocator.Allocate(PageSize, 8);
        var before = allocator.Statistics;
        byte* foreign = (byte*)NativeMemory.AlignedAlloc(PageSize, PageSize);
        try
        {
            var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(foreign, PageSize, 8));
            Assert.Equal("pointer", error.ParamName);
            Assert.Throws<ArgumentException>(() => allocator.Deallocate(mine + PageSize, PageSize, 8));
            Assert.Throws<ArgumentException>(() => allocator.GrowingReallocate(foreign, PageSize, 2 * PageSize, 8));
            Assert.Throws<ArgumentException>(() => allocator.TryShrinkInPlace(foreign, PageSize, 1, 8));

            Assert.Equal(before, allocator.Statistics);
            Assert.Equal(1, allocator.LiveBlockCount);
            Assert.False(allocator.Owns(foreign));
            foreign[0] = 1; // still ours to use: nothing was unmapped
        }
        finally
        {
            NativeMemory.AlignedFree(foreign);
        }

        allocator.Deallocate(mine, PageSize, 8);
    }

    [LinuxFact]
    public void Double_free_throws_and_changes_nothing()
    {
        using var allocator = new MemoryMapAllocator();
        byte* keep = allocator.Allocate(PageSize, 8);
        byte* block = allocator.Allocate(PageSize, 8);
        allocator.Deallocate(block, PageSize, 8);
        var before = allocator.Statistics;

        var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, PageSize, 8));

        Assert.Contains("double free", error.Message, StringComparison.Ordinal);
        Assert.Equal(before, allocator.Statistics);
        Assert.Equal(1, allocator.LiveBlockCount);
        Assert.Equal((long)PageSize, allocator.Source.MappedBytes);
        keep[0] = 1;
        allocator.Deallocate(keep, PageSize, 8);
    }

    [LinuxFact]
    public void Free_with_a_size_beyond_the_block_throws_and_keeps_the_block()
    {
        using var allocator = new MemoryMapAllocator();
        byte* block = allocator.Allocate(PageSize, 8);

        var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, PageSize + 1, 8));

        Assert.Contains("fewer than the size", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, allocator.LiveBlockCount);
        block[PageSize - 1] = 1;
        allocator.Deallocate(block, PageSize, 8);
    }

    [LinuxTheory]
    [InlineData(1u << 16)]
    [InlineData(2u << 20)]
    public void Alignment_above_the_page_size_is_honoured_by_over_mapping_and_trimming(uint alignment)
    {
        using var allocator = new MemoryMapAllocator();

        byte* block = allocator.Allocate(3 * PageSize, alignment);
        FillPattern(block, 3 * PageSize);

        Assert.True(Allocator.IsAligned((nuint)block, alignment));
        Assert.Equal(3 * (long)PageSize, allocator.Source.MappedBytes); // head and tail were unmapped

        // Growing far beyond what fits in place moves the block; it must stay aligned.
        byte* grown = allocator.GrowingReallocate(block, 3 * PageSize, 1024 * PageSize, alignment);
        Assert.True(Allocator.IsAligned((nuint)grown, alignment));
        AssertPattern(grown, 3 * PageSize);
        Assert.Equal(1024 * (long)PageSize, allocator.Source.MappedBytes);

        allocator.Deallocate(grown, 1024 * PageSize, alignment);
        Assert.Equal(0, allocator.Source.MappedBytes);
    }

    [LinuxFact]
    public void Owns_covers_the_whole_block_and_nothing_past_it()
    {
        using var allocator = new MemoryMapAllocator();
        byte* block = allocator.Allocate(2 * PageSize, 8);

        Assert.True(allocator.Owns(block));
        Assert.True(allocator.Owns(block + PageSize + 17));
        Assert.True(allocator.Owns(block + (2 * PageSize) - 1));
        Assert.False(allocator.Owns(block + (2 * PageSize)));
        Assert.False(allocator.Owns(block - 1));
        allocator.Deallocate(block, 2 * PageSize, 8);
    }

    [LinuxFact]
    public void Dispose_unmaps_every_live_block_and_refuses_later_use()
    {
        var allocator = new MemoryMapAllocator();
        for (int i = 1; i <= 3; i++)
        {
            allocator.Allocate((nuint)i * PageSize, 8);
        }

        Assert.Equal(6 * (long)PageSize, allocator.Source.MappedBytes);

        allocator.Dispose();

        Assert.Equal(0, allocator.Source.MappedBytes);
        Assert.Equal(0, allocator.LiveBlockCount);
        Assert.Equal(3, allocator.Statistics.DeallocationCount);   // blocks unmapped by dispose count as freed
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Throws<ObjectDisposedException>(() => allocator.Allocate(8, 8));
        allocator.Dispose();
    }

    [LinuxFact]
    public void Blocks_follow_the_source_numa_policy()
    {
        using var allocator = new MemoryMapAllocator(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Bind(NumaNodeSet.Of(0)) });
        byte* block = allocator.Allocate(4 * PageSize, 8);
        block[0] = 1;

        Assert.Equal(NumaPolicyMode.Bind, MemoryMapSource.GetPolicyOfAddress(block)!.Mode);
        Assert.Equal(0, MemoryMapSource.GetNodeOfAddress(block));
        Assert.Equal(new Dictionary<int, long> { [0] = 4 * (long)PageSize }, allocator.Source.GetMappedBytesByNode());
        allocator.Deallocate(block, 4 * PageSize, 8);
    }

    [LinuxFact]
    public void Explicit_huge_pages_without_reserved_pages_fail_cleanly()
    {
        using var allocator = new MemoryMapAllocator(new MemoryMapSourceOptions { ExplicitHugePages = ExplicitHugePages.Size2MiB });
        Assert.Equal((nuint)(2u << 20), allocator.GetUsableSize(1, 8));

        if (allocator.TryAllocate(1, 8, out byte* block))
        {
            block[0] = 1;
            allocator.Deallocate(block, 1, 8);
            return;
        }

        Assert.Equal(1, allocator.Statistics.FailureCount);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(1, 8));
        Assert.Equal(0, allocator.LiveBlockCount);
    }

    [LinuxFact]
    public void Live_blocks_are_registered_as_owned_by_their_allocator_and_unregistered_when_freed()
    {
        // OwnerRegistry is how SwitchableAllocator routes a free by address: every mapped byte names
        // this allocator while the block is live, and no byte does once it is freed or trimmed.
        using var allocator = Registering();
        byte* block = allocator.Allocate(3 * PageSize, 8);

        Assert.Same(allocator, OwnerRegistry.Find((nuint)block));
        Assert.Same(allocator, OwnerRegistry.Find((nuint)block + (3 * PageSize) - 1));
        Assert.NotSame(allocator, OwnerRegistry.Find((nuint)block + (3 * PageSize)));

        Assert.True(allocator.TryShrinkInPlace(block, 3 * PageSize, PageSize, 8));
        Assert.Same(allocator, OwnerRegistry.Find((nuint)block + PageSize - 1));
        Assert.NotSame(allocator, OwnerRegistry.Find((nuint)block + PageSize));

        if (allocator.TryGrowInPlace(block, PageSize, 2 * PageSize, 8))
        {
            Assert.Same(allocator, OwnerRegistry.Find((nuint)block + (2 * PageSize) - 1));
            allocator.Deallocate(block, 2 * PageSize, 8);
        }
        else
        {
            allocator.Deallocate(block, PageSize, 8);
        }

        // Another allocator may map the address again at once, so only "not ours" is certain.
        Assert.NotSame(allocator, OwnerRegistry.Find((nuint)block));
        Assert.False(allocator.Owns(block));
    }

    [LinuxFact]
    public void Grow_that_moves_the_mapping_unregisters_the_old_range_and_registers_the_new_one()
    {
        using var allocator = Registering();

        // The kernel places consecutive mappings next to each other: find a block whose next page is
        // another block, so that growing it cannot extend in place and mremap must move it.
        var blocks = new List<nuint>();
        nuint lower = 0;
        for (int i = 0; i < 64 && lower == 0; i++)
        {
            nuint block = (nuint)allocator.Allocate(PageSize, 8);
            foreach (nuint other in blocks)
            {
                lower = other + PageSize == block ? other : block + PageSize == other ? block : 0;
                if (lower != 0)
                {
                    break;
                }
            }

            blocks.Add(block);
        }

        Assert.True(lower != 0, "no two of 64 one-page mappings were adjacent");
        FillPattern((byte*)lower, PageSize);
        long allocations = allocator.Statistics.AllocationCount;
        byte* grown = allocator.GrowingReallocate((byte*)lower, PageSize, 8 * PageSize, 8);

        Assert.True((nuint)grown != lower, "the next page is taken, so the block had to move");
        AssertPattern(grown, PageSize);
        Assert.NotSame(allocator, OwnerRegistry.Find(lower));
        Assert.False(allocator.Owns((byte*)lower));
        Assert.Same(allocator, OwnerRegistry.Find((nuint)grown));
        Assert.Same(allocator, OwnerRegistry.Find((nuint)grown + (8 * PageSize) - 1));
        Assert.True(allocator.Owns(grown + (5 * PageSize)));
        Assert.Equal(allocations + 1, allocator.Statistics.AllocationCount); // a move counts as one more allocation

        blocks.Remove(lower);
        allocator.Deallocate(grown, 8 * PageSize, 8);
        Assert.NotSame(allocator, OwnerRegistry.Find((nuint)grown));
        foreach (nuint block in blocks)
        {
            allocator.Deallocate((byte*)block, PageSize, 8);
        }

        Assert.Equal(0, allocator.LiveBlockCount);
    }

    // The thread-local allocator's default fallback: registers its mappings in OwnerRegistry.
    private static MemoryMapAllocator Registering() => new(new MemoryMapSource(), registerBlocks: true);

    [LinuxFact]
    public void A_plain_allocator_registers_nothing_and_still_owns_block_starts_and_interiors()
    {
        // Registration costs a table entry per 4 KiB of every mapping: only the thread-local
        // allocator's default fallback pays it.
        using var allocator = new MemoryMapAllocator();
        byte* block = allocator.Allocate(3 * PageSize, 8);

        Assert.Null(OwnerRegistry.Find((nuint)block));
        Assert.True(allocator.Owns(block));
        Assert.True(allocator.Owns(block + (2 * PageSize) + 17));
        Assert.False(allocator.Owns(block + (3 * PageSize)));

        allocator.Deallocate(block, 3 * PageSize, 8);
        Assert.False(allocator.Owns(block));
    }

    [LinuxTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Owns_is_false_for_another_allocators_block_a_freed_block_and_memory_not_mapped_here(bool registerBlocks)
    {
        using var allocator = new MemoryMapAllocator(new MemoryMapSource(), registerBlocks);
        using var other = new MemoryMapAllocator(new MemoryMapSource(), registerBlocks);
        using var native = new NativeMemoryAllocator(trackOwnership: true);
        byte* mine = allocator.Allocate(PageSize, 8);
        byte* theirs = other.Allocate(PageSize, 8);
        byte* heap = native.Allocate(64, 8);

        Assert.True(allocator.Owns(mine));
        Assert.False(allocator.Owns(theirs));
        Assert.True(other.Owns(theirs));
        Assert.False(allocator.Owns(heap));
        Assert.False(allocator.Owns((byte*)Allocator.ZeroSizeSentinel));

        allocator.Deallocate(mine, PageSize, 8);
        Assert.False(allocator.Owns(mine));
        other.Deallocate(theirs, PageSize, 8);
        native.Deallocate(heap, 64, 8);
    }

    [LinuxFact]
    public void Dispose_unregisters_every_live_block()
    {
        var allocator = Registering();
        var blocks = new List<nuint>();
        for (int i = 1; i <= 3; i++)
        {
            blocks.Add((nuint)allocator.Allocate((nuint)i * PageSize, i == 3 ? (nuint)(64 * 1024) : 8));
        }

        Assert.All(blocks, block => Assert.Same(allocator, OwnerRegistry.Find(block)));

        allocator.Dispose();

        Assert.All(blocks, block => Assert.NotSame(allocator, OwnerRegistry.Find(block)));
        Assert.All(blocks, block => Assert.False(allocator.Owns((byte*)block)));
    }

    [LinuxFact]
    public void Concurrent_allocations_and_frees_from_four_threads_stay_consistent()
    {
        using var allocator = new MemoryMapAllocator();

        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, worker =>
        {
            var mine = new List<(nint Address, nuint Size)>();
            var random = new Random(worker);
            for (int i = 0; i < 300; i++)
            {
                if (mine.Count > 0 && random.Next(3) == 0)
                {
                    int pick = random.Next(mine.Count);
                    var (address, size) = mine[pick];
                    Assert.True(new Span<byte>((void*)address, (int)size).IndexOfAnyExcept((byte)(worker + 1)) < 0);
                    allocator.Deallocate((byte*)address, size, 8);
                    mine.RemoveAt(pick);
                }
                else
                {
                    nuint size = (nuint)random.Next(1, 20_000);
                    byte* block = allocator.Allocate(size, 8);
                    new Span<byte>(block, (int)size).Fill((byte)(worker + 1));
                    mine.Add(((nint)block, size));
                }
            }

            foreach (var (address, size) in mine)
            {
                Assert.True(new Span<byte>((void*)address, (int)size).IndexOfAnyExcept((byte)(worker + 1)) < 0);
                allocator.Deallocate((byte*)address, size, 8);
            }
        });

        Assert.Equal(0, allocator.LiveBlockCount);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(0, allocator.Source.MappedBytes);
        Assert.Equal(allocator.Statistics.AllocationCount, allocator.Statistics.DeallocationCount);
    }

    [LinuxFact]
    public void Model_based_sequences_keep_blocks_aligned_disjoint_and_intact()
    {
        // Checked against AllocatorModel's reference model: a list of live blocks with fill bytes.
        var settings = new ModelSettings
        {
            MaxSize = 64 * 1024,
            MaxAlignmentLog2 = 14, // up to 16 KiB, above the page size
            Iterations = 60,
            MaxSteps = 100,
        };

        long steps = AllocatorModel.Run(
            settings,
            () => new MemoryMapAllocator(),
            afterAllFreed: allocator =>
            {
                Assert.Equal(0, allocator.LiveBlockCount);
                Assert.Equal(0, allocator.Statistics.BytesInUse);
                Assert.Equal(0, allocator.Source.MappedBytes);
            });

        Assert.True(steps >= 2000, $"only {steps} steps ran");
    }

    private static void FillPattern(byte* block, nuint size)
    {
        for (nuint i = 0; i < size; i++)
        {
            block[i] = (byte)(i * 31 % 251);
        }
    }

    private static void AssertPattern(byte* block, nuint size)
    {
        for (nuint i = 0; i < size; i++)
        {
            if (block[i] != (byte)(i * 31 % 251))
            {
                Assert.Fail($"byte {i} lost its value");
            }
        }
    }
}
