namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Boundary tags at work in one <see cref="NumaHeapAllocator"/> heap: frees merge with free
/// neighbours on both sides, allocations split the lowest block that fits and skip those too small,
/// growth takes a free neighbour, shrinking gives the tail back; small blocks wait in a cache until
/// merged (a flush merges them at once, where these tests need to see merging). The thread caches are
/// off here: these tests look at the heap itself.
/// </summary>
public unsafe class NumaHeapCoalescingTests
{
    private const nuint SegmentSize = (nuint)NumaHeapAllocatorOptions.MinimumSegmentSize;

    private static NumaHeapAllocator Create() => new(new NumaHeapAllocatorOptions
    {
        SegmentSize = (long)SegmentSize,
        MaximumHeapBlockSize = 64 * 1024,
        HeapsPerNode = 1,
        MaximumSegmentsPerHeap = 1,
        ThreadCaches = false,   // the heap's own behaviour (NumaHeapThreadCacheTests covers the thread caches)
    });

    private static NumaHeapSnapshot Heap(NumaHeapAllocator allocator) => allocator.GetHeaps().Single(h => h.SegmentCount > 0);

    [Theory]
    [InlineData(0, 1, 2)]
    [InlineData(2, 0, 1)]
    [InlineData(0, 2, 1)]
    [InlineData(1, 2, 0)]
    public void Three_neighbours_freed_in_any_order_merge_into_the_one_free_block(int first, int second, int third)
    {
        using NumaHeapAllocator allocator = Create();
        byte*[] blocks = [allocator.Allocate(2000, 16), allocator.Allocate(3000, 16), allocator.Allocate(4000, 16)];
        nuint[] sizes = [2000, 3000, 4000];
        Assert.True(blocks[0] < blocks[1] && blocks[1] < blocks[2]);
        Assert.Equal(1, Heap(allocator).FreeBlockCount);   // the rest of the segment

        foreach (int i in (int[])[first, second, third])
        {
            allocator.Deallocate(blocks[i], sizes[i], 16);
            allocator.Flush();
            Assert.Null(allocator.Validate());
        }

        NumaHeapSnapshot heap = Heap(allocator);
        Assert.Equal(1, heap.FreeBlockCount);
        Assert.Equal((long)SegmentSize - 64 - 16, heap.FreeBytes);
    }

    [Fact]
    public void An_allocation_splits_the_lowest_fitting_block_and_the_rest_stays_free()
    {
        using NumaHeapAllocator allocator = Create();
        byte* big = allocator.Allocate(8000, 16);
        byte* guard = allocator.Allocate(2000, 16);
        allocator.Deallocate(big, 8000, 16);
        allocator.Flush();
        Assert.Equal(2, Heap(allocator).FreeBlockCount);

        byte* part = allocator.Allocate(3000, 16);
        Assert.True(part == big);                         // lowest address first
        byte* rest = allocator.Allocate(4000, 16);
        Assert.True(rest == big + 3008 + 16);             // the split-off tail: 3000 rounded to 3008, then the tail's header
        Assert.Null(allocator.Validate());
        allocator.Deallocate(part, 3000, 16);
        allocator.Deallocate(rest, 4000, 16);
        allocator.Deallocate(guard, 2000, 16);
        allocator.Flush();
        Assert.Equal(1, Heap(allocator).FreeBlockCount);
    }

    [Fact]
    public void A_walk_skips_free_blocks_too_small_for_the_request()
    {
        using NumaHeapAllocator allocator = Create();
        // Two free blocks of one list (1100 and 1200 bytes share a class), kept apart by live guards.
        byte* low = allocator.Allocate(1100, 16);
        byte* guard1 = allocator.Allocate(2000, 16);
        byte* high = allocator.Allocate(1200, 16);
        byte* guard2 = allocator.Allocate(2000, 16);
        allocator.Deallocate(low, 1100, 16);
        allocator.Deallocate(high, 1200, 16);
        allocator.Flush();

        Assert.True(allocator.Allocate(1150, 16) == high);  // the lower block is too small: skipped
        Assert.True(allocator.Allocate(1100, 16) == low);
        Assert.Null(allocator.Validate());
        allocator.Deallocate(low, 1100, 16);
        allocator.Deallocate(high, 1150, 16);
        allocator.Deallocate(guard1, 2000, 16);
        allocator.Deallocate(guard2, 2000, 16);
        allocator.Flush();
        Assert.Equal(1, Heap(allocator).FreeBlockCount);
    }

    [Fact]
    public void Growth_in_place_takes_the_free_neighbour_and_fails_when_it_is_live_or_too_small()
    {
        using NumaHeapAllocator allocator = Create();
        byte* a = allocator.Allocate(2000, 16);
        byte* b = allocator.Allocate(2000, 16);
        byte* c = allocator.Allocate(2000, 16);
        a[1999] = 42;
        Assert.False(allocator.TryGrowInPlace(a, 2000, 2100, 16));   // b is live
        allocator.Deallocate(b, 2000, 16);
        allocator.Flush();
        Assert.True(allocator.TryGrowInPlace(a, 2000, 3000, 16));    // into b's space
        Assert.Equal(42, a[1999]);
        Assert.False(allocator.TryGrowInPlace(a, 3000, 5000, 16));   // a and b together are 4032 bytes
        Assert.True(allocator.TryGrowInPlace(a, 3000, 4016, 16));    // exactly a and b
        Assert.Null(allocator.Validate());
        Assert.True(allocator.GrowingReallocate(c, 2000, 60_000, 16) == c);  // the rest of the segment follows c
        allocator.Deallocate(a, 4016, 16);
        allocator.Deallocate(c, 60_000, 16);
        allocator.Flush();
        Assert.Equal(1, Heap(allocator).FreeBlockCount);
    }

    [Fact]
    public void Shrinking_in_place_gives_the_tail_back_merged_with_a_free_neighbour()
    {
        using NumaHeapAllocator allocator = Create();
        byte* a = allocator.Allocate(8000, 16);
        byte* b = allocator.Allocate(2000, 16);
        byte* c = allocator.Allocate(2000, 16);
        allocator.Deallocate(b, 2000, 16);
        allocator.Flush();
        long freeBefore = Heap(allocator).FreeBytes;

        Assert.True(allocator.TryShrinkInPlace(a, 8000, 1000, 16));
        NumaHeapSnapshot heap = Heap(allocator);
        Assert.Equal(2, heap.FreeBlockCount);                 // a's tail merged with b; the segment's rest
        Assert.Equal(freeBefore + 8016 - 1024, heap.FreeBytes);   // blocks of 8000 + 16 and 1008 + 16 bytes
        Assert.True(allocator.Allocate(8500, 16) == a + 1008 + 16);   // the merged tail and b hold 8500
        Assert.Null(allocator.Validate());
    }

    [Fact]
    public void Small_frees_wait_in_the_cache_and_trim_merges_them_and_unmaps_the_empty_segment()
    {
        using NumaHeapAllocator allocator = Create();
        var blocks = Enumerable.Range(0, 10).Select(_ => (nint)allocator.Allocate(64, 16)).ToList();
        foreach (nint block in blocks)
        {
            allocator.Deallocate((byte*)block, 64, 16);
        }

        NumaHeapSnapshot heap = Heap(allocator);
        Assert.Equal(10, heap.CachedBlockCount);
        Assert.Equal(1, heap.FreeBlockCount);
        Assert.True(allocator.Allocate(64, 16) == (byte*)blocks[^1]);  // the cache is last in, first out
        allocator.Deallocate((byte*)blocks[^1], 64, 16);
        Assert.Null(allocator.Validate());

        Assert.Equal((long)SegmentSize, allocator.Trim());
        Assert.Equal(0, allocator.MappedBytes);
    }
}
