using System.Runtime.InteropServices;
using AllocHosting.Allocators.Tests.Model;
using static AllocHosting.Allocators.Tests.BlockContents;
using static AllocHosting.Allocators.Tests.TestThreads;
using static AllocHosting.Allocators.Tests.SlabPageInspection;

namespace AllocHosting.Allocators.Tests;

/// <summary>One thread's use of a <see cref="ThreadLocalAllocator"/>: size classes, allocation, resizing, the fallback, validation of frees, statistics and disposal.</summary>
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
                Assert.NotNull(PageOf(block));
                Assert.Equal(usable, PageOf(block)!.BlockSize);
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
                Assert.Equal(alignment <= ThreadLocalAllocator.MaximumSlabAlignment, PageOf(block) is not null);
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
            Assert.Equal(next <= allocator.MaximumSlabSize, PageOf(block) is not null);
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

        Assert.Equal(8, blocks.Count(b => PageOf((byte*)b) is not null));
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
        var page = PageOf(buffer)!;
        CollectUntil(() => FreeListsHold(page, (nuint)buffer));
        Assert.True(FreeListsHold(page, (nuint)buffer), "the block went back to the allocating heap");
    }

    [Fact]
    public void Shared_instance_serves_this_thread()
    {
        byte* block = ThreadLocalAllocator.Shared.Allocate(1024, 16);
        Assert.True(ThreadLocalAllocator.Shared.Owns(block));
        ThreadLocalAllocator.Shared.Deallocate(block, 1024, 16);
        Assert.Same(ThreadLocalAllocator.Shared, ThreadLocalAllocator.Shared);
    }
}
