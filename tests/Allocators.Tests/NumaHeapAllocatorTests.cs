using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

/// <summary><see cref="NumaHeapAllocator"/>: the contract (model-based), sizes, alignment, over-size blocks, bad input and exhaustion.</summary>
public unsafe class NumaHeapAllocatorTests
{
    private static NumaHeapAllocator Small(int segments = int.MaxValue, bool threadCaches = true) => new(new NumaHeapAllocatorOptions
    {
        SegmentSize = NumaHeapAllocatorOptions.MinimumSegmentSize,
        MaximumHeapBlockSize = 64 * 1024,
        HeapsPerNode = 1,
        MaximumSegmentsPerHeap = segments,
        ThreadCaches = threadCaches,
    });

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void The_model_holds_with_heap_and_mapped_blocks_and_the_heaps_stay_valid(bool threadCaches)
    {
        // Sizes up to 100 KB cross the 64 KiB heap limit, so blocks move between heaps and mappings.
        var settings = new ModelSettings { MaxSize = 100_000, MaxAlignmentLog2 = 13, Iterations = 60, MaxSteps = 150 };
        long steps = AllocatorModel.Run(settings, () => Small(threadCaches: threadCaches), afterAllFreed: allocator =>
        {
            Assert.Null(allocator.Validate());
            Assert.Equal(0, allocator.Statistics.BytesInUse);
            Assert.Equal(0, allocator.GetHeaps().Sum(h => h.BytesInUse));
        });
        Assert.True(steps >= settings.Iterations);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void The_model_holds_with_bad_input_and_one_small_segment(bool threadCaches)
    {
        ModelSettings settings = BadInputSettings.For("numaheap") with { MaxSize = 20_000, MaxAlignmentLog2 = 12 };
        AllocatorModel.Run(settings, () => Small(segments: 1, threadCaches: threadCaches), afterAllFreed: allocator => Assert.Null(allocator.Validate()));
    }

    [Theory]
    [InlineData(1, 32)]
    [InlineData(32, 32)]
    [InlineData(33, 48)]
    [InlineData(1000, 1008)]
    [InlineData(65536, 65536)]
    [InlineData(65537, 69632)]
    public void Usable_sizes_are_rounded_to_16_bytes_in_heaps_and_to_pages_when_mapped(int size, int usable)
    {
        using NumaHeapAllocator allocator = Small();
        Assert.Equal((nuint)usable, allocator.GetUsableSize((nuint)size, 16));
        byte* block = allocator.Allocate((nuint)size, 16);
        new Span<byte>(block, usable).Fill(0xA5);   // the whole usable size is the caller's
        Assert.Null(allocator.Validate());
        allocator.Deallocate(block, (nuint)usable, 16);  // any size with the same usable size names the block
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Theory]
    [InlineData(32)]
    [InlineData(256)]
    [InlineData(4096)]
    [InlineData(1 << 16)]
    public void Aligned_blocks_are_aligned_and_leave_their_lead_free(int alignment)
    {
        using NumaHeapAllocator allocator = Small();
        var blocks = new List<nint>();
        for (int i = 0; i < 20; i++)
        {
            byte* block = allocator.Allocate((nuint)(24 + (i * 40)), (nuint)alignment);
            Assert.True(Allocator.IsAligned((nuint)block, (nuint)alignment));
            blocks.Add((nint)block);
        }

        Assert.Null(allocator.Validate());
        for (int i = 0; i < blocks.Count; i++)
        {
            allocator.Deallocate((byte*)blocks[i], (nuint)(24 + (i * 40)), (nuint)alignment);
        }

        Assert.Null(allocator.Validate());
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Foreign_interior_and_freed_pointers_and_wrong_sizes_are_refused_and_change_nothing()
    {
        using NumaHeapAllocator allocator = Small();
        byte* block = allocator.Allocate(100, 16);
        byte* big = allocator.Allocate(100_000, 16);
        byte* freed = allocator.Allocate(100, 16);
        allocator.Deallocate(freed, 100, 16);
        AllocatorStatistics before = allocator.Statistics;
        byte* foreign = stackalloc byte[64];

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(foreign, 64, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block + 16, 64, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block + 8, 64, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(freed, 100, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 200, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 10, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(big, 50_000, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(big + 4096, 4096, 16));
        Assert.Throws<ArgumentException>(() => allocator.TryGrowInPlace(block + 16, 10, 20, 16));
        Assert.Throws<ArgumentException>(() => allocator.TryShrinkInPlace(foreign, 64, 20, 16));
        Assert.Throws<ArgumentException>(() => allocator.ShrinkingReallocate(big, 50_000, 100, 16));

        Assert.Equal(before, allocator.Statistics);
        Assert.Null(allocator.Validate());
        allocator.Deallocate(block, 100, 16);
        allocator.Deallocate(big, 100_000, 16);
    }

    [Fact]
    public void Mapped_blocks_grow_and_shrink_and_move_into_a_heap_when_small_enough()
    {
        using NumaHeapAllocator allocator = Small();
        byte* big = allocator.Allocate(100_000, 16);
        Assert.Null(allocator.GetHeapOf(big));
        Assert.True(allocator.Owns(big + 99_999));
        big[99_999] = 7;
        big = allocator.GrowingReallocate(big, 100_000, 300_000, 16);
        Assert.Equal(7, big[99_999]);
        Assert.True(allocator.TryShrinkInPlace(big, 300_000, 200_000, 16));
        byte* small = allocator.ShrinkingReallocate(big, 200_000, 1000, 16);
        Assert.NotNull(allocator.GetHeapOf(small));
        allocator.Deallocate(small, 1000, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void A_heap_at_its_segment_limit_is_exhausted_and_recovers_after_frees()
    {
        using NumaHeapAllocator allocator = Small(segments: 1);
        var blocks = new List<nint>();
        while (allocator.TryAllocate(30_000, 16, out byte* block))
        {
            blocks.Add((nint)block);
            Assert.True(blocks.Count < 100, "a 1 MiB segment cannot hold 100 blocks of 30 KB");
        }

        Assert.True(blocks.Count >= 30);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(30_000, 16));
        Assert.Equal(2, allocator.Statistics.FailureCount);
        allocator.Deallocate((byte*)blocks[^1], 30_000, 16);
        blocks.RemoveAt(blocks.Count - 1);
        Assert.True(allocator.TryAllocate(30_000, 16, out byte* again));
        allocator.Deallocate(again, 30_000, 16);
        foreach (nint block in blocks)
        {
            allocator.Deallocate((byte*)block, 30_000, 16);
        }

        allocator.Flush();
        Assert.Null(allocator.Validate());
        Assert.Equal(1, allocator.GetHeaps().Single().FreeBlockCount);
    }

    [Fact]
    public void Trim_unmaps_empty_segments_and_dispose_refuses_further_use()
    {
        var allocator = Small();
        var blocks = Enumerable.Range(0, 100).Select(_ => (nint)allocator.Allocate(40_000, 16)).ToList();
        long mapped = allocator.MappedBytes;
        Assert.True(mapped >= 4 * NumaHeapAllocatorOptions.MinimumSegmentSize);
        foreach (nint block in blocks)
        {
            allocator.Deallocate((byte*)block, 40_000, 16);
        }

        Assert.Equal(mapped, allocator.Trim());
        Assert.Equal(0, allocator.MappedBytes);
        byte* after = allocator.Allocate(64, 16);
        allocator.Dispose();
        Assert.False(allocator.Owns(after));
        Assert.Throws<ObjectDisposedException>(() => allocator.Allocate(64, 16));
        Assert.Throws<ObjectDisposedException>(() => allocator.Deallocate(after, 64, 16));
    }
}
