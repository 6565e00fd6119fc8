using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

// BTreeAllocator's contract in single cases: rounding, alignment, splitting, growth by regions,
// over-size requests, in-place resizing, exhaustion, bad input and disposal. Coalescing has its own
// class (BTreeAllocatorCoalescingTests), the random sequences theirs (BTreeAllocatorPropertyTests).
public unsafe class BTreeAllocatorTests
{
    private const nuint KiB = 1024;

    private static BTreeAllocator Create(NativeMemorySource source, nuint regionSize = 16 * KiB, nuint maximumCapacity = 1024 * KiB) =>
        new(source, regionSize, maximumCapacity);

    [Fact]
    public void Requests_are_rounded_to_the_granule_and_carved_one_after_another()
    {
        using var allocator = Create(new NativeMemorySource());
        byte* first = allocator.Allocate(1, 1);
        byte* second = allocator.Allocate(100, 8);
        byte* third = allocator.Allocate(16, 16);
        Assert.True(second == first + 16);
        Assert.True(third == second + 112);
        Assert.Equal(16u, allocator.GetUsableSize(1, 1));
        Assert.Equal(112u, allocator.GetUsableSize(100, 8));
        Assert.Equal(144L, allocator.Statistics.BytesInUse);
        Assert.Equal(1, allocator.RegionCount);
        Assert.Equal(1L, allocator.FreeBlockCount);
        Assert.Equal(allocator.RegionSize - 144, allocator.LargestFreeBlock);
        allocator.Validate();
        allocator.Deallocate(second, 100, 8);
        allocator.Deallocate(first, 1, 1);
        allocator.Deallocate(third, 16, 16);
        Assert.Equal(0L, allocator.Statistics.BytesInUse);
        Assert.Equal(allocator.RegionSize, allocator.LargestFreeBlock);
        allocator.Validate();
    }

    // The example of BTreeAllocator's doc comment, as written there.
    [Fact]
    public void The_doc_comment_example_runs_and_grows_in_place()
    {
        using var heap = new BTreeAllocator(NativeMemorySource.Shared);
        byte* p = heap.Allocate(100, 16);               // a 112-byte block
        Assert.Equal(112L, heap.Statistics.BytesInUse);
        byte* before = p;
        p = heap.GrowingReallocate(p, 100, 200, 16);    // in place when the block after it is free
        Assert.True(p == before);
        heap.Deallocate(p, 200, 16);
        Assert.Equal(0L, heap.Statistics.BytesInUse);
    }

    [Fact]
    public void The_best_fit_is_the_smallest_free_block_that_holds_the_request()
    {
        using var allocator = Create(new NativeMemorySource());
        byte* a = allocator.Allocate(256, 16);
        byte* keepA = allocator.Allocate(16, 16);
        byte* b = allocator.Allocate(64, 16);
        byte* keepB = allocator.Allocate(16, 16);
        byte* c = allocator.Allocate(128, 16);
        byte* keepC = allocator.Allocate(16, 16);
        allocator.Deallocate(a, 256, 16);
        allocator.Deallocate(b, 64, 16);
        allocator.Deallocate(c, 128, 16);
        Assert.Equal(4L, allocator.FreeBlockCount);   // three holes and the rest of the region

        Assert.True(allocator.Allocate(60, 16) == b);  // 64 fits exactly
        Assert.True(allocator.Allocate(100, 16) == c); // 128 is the smallest of 128 and 256
        byte* split = allocator.Allocate(200, 16);
        Assert.True(split == a);                       // 256 split: 208 taken, 48 stay free
        Assert.True(allocator.Allocate(48, 16) == a + 208);
        allocator.Validate();
        (nuint Block, nuint Size)[] live = [((nuint)b, 60), ((nuint)c, 100), ((nuint)a, 200), ((nuint)(a + 208), 48), ((nuint)keepA, 16), ((nuint)keepB, 16), ((nuint)keepC, 16)];
        foreach ((nuint block, nuint size) in live)
        {
            allocator.Deallocate((byte*)block, size, 16);
        }

        Assert.Equal(1L, allocator.FreeBlockCount);
        allocator.Validate();
    }

    [Theory]
    [InlineData(32)]
    [InlineData(256)]
    [InlineData(4096)]
    [InlineData(65536)]
    public void Aligned_requests_are_aligned_and_the_skipped_front_stays_free(int alignment)
    {
        using var allocator = Create(new NativeMemorySource(), 16 * KiB, 4096 * KiB);
        byte* offset = allocator.Allocate(16, 16);
        byte* aligned = allocator.Allocate(100, (nuint)alignment);
        Assert.True(Allocator.IsAligned((nuint)aligned, (nuint)alignment));
        allocator.Validate();
        byte* small = allocator.Allocate(16, 16);
        allocator.Deallocate(small, 16, 16);
        allocator.Deallocate(aligned, 100, (nuint)alignment);
        allocator.Deallocate(offset, 16, 16);
        Assert.Equal(0L, allocator.Statistics.BytesInUse);
        Assert.True(allocator.FreeBlockCount <= allocator.RegionCount);
        allocator.Validate();
    }

    [Fact]
    public void A_request_larger_than_a_region_gets_a_region_of_its_own_and_its_memory_is_reused()
    {
        var source = new NativeMemorySource();
        using var allocator = Create(source);
        byte* small = allocator.Allocate(64, 16);
        byte* large = allocator.Allocate(100 * KiB, 16);
        Assert.Equal(2, allocator.RegionCount);
        Assert.True(allocator.RegionBytes >= (116 * KiB));
        new Span<byte>(large, 100 * 1024).Fill(7);
        allocator.Validate();
        allocator.Deallocate(large, 100 * KiB, 16);

        // The freed over-size block serves the next requests without another region.
        byte* again = allocator.Allocate(50 * KiB, 16);
        byte* more = allocator.Allocate(40 * KiB, 16);
        Assert.Equal(2, allocator.RegionCount);
        allocator.Deallocate(again, 50 * KiB, 16);
        allocator.Deallocate(more, 40 * KiB, 16);
        allocator.Deallocate(small, 64, 16);
        allocator.Validate();
        Assert.Equal((long)(allocator.RegionBytes + allocator.NodeBytes), source.BytesObtained);
        Assert.Equal(allocator.RegionBytes + allocator.NodeBytes, allocator.ObtainedBytes);
    }

    [Fact]
    public void Growing_in_place_takes_the_front_of_a_free_next_block_and_refuses_a_live_one()
    {
        using var allocator = Create(new NativeMemorySource());
        byte* block = allocator.Allocate(100, 16);
        block[0] = 42;
        Assert.True(allocator.TryGrowInPlace(block, 100, 112, 16));      // the same 112-byte block
        Assert.True(allocator.TryGrowInPlace(block, 112, 1000, 16));     // the free rest of the region
        Assert.Equal(1008L, allocator.Statistics.BytesInUse);
        allocator.Validate();

        byte* next = allocator.Allocate(16, 16);
        Assert.True(next == block + 1008);
        AllocatorStatistics before = allocator.Statistics;
        Assert.False(allocator.TryGrowInPlace(block, 1000, 1100, 16));
        Assert.Equal(before, allocator.Statistics);

        // A growing reallocation then moves the block, contents and all.
        byte* moved = allocator.GrowingReallocate(block, 1000, 1100, 16);
        Assert.True(moved != block);
        Assert.Equal(42, moved[0]);
        allocator.Validate();
        allocator.Deallocate(moved, 1100, 16);
        allocator.Deallocate(next, 16, 16);
        Assert.Equal(1L, allocator.FreeBlockCount);
    }

    [Fact]
    public void Shrinking_in_place_frees_the_tail_and_merges_it_with_a_free_next_block()
    {
        using var allocator = Create(new NativeMemorySource());
        byte* block = allocator.Allocate(1024, 16);
        byte* next = allocator.Allocate(256, 16);
        allocator.Deallocate(next, 256, 16);
        Assert.Equal(1L, allocator.FreeBlockCount);
        Assert.True(allocator.TryShrinkInPlace(block, 1024, 100, 16));
        Assert.Equal(1L, allocator.FreeBlockCount);                     // the tail merged with the rest
        Assert.Equal(112L, allocator.Statistics.BytesInUse);
        Assert.True(allocator.ShrinkingReallocate(block, 100, 50, 16) == block);
        allocator.Validate();
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 100, 16));
        allocator.Deallocate(block, 50, 16);
        Assert.Equal(allocator.RegionSize, allocator.LargestFreeBlock);
    }

    [Fact]
    public void The_maximum_capacity_is_exhaustion_and_frees_make_room_again()
    {
        using var allocator = Create(new NativeMemorySource(), 16 * KiB, 64 * KiB);
        var blocks = new List<nuint>();
        while (allocator.TryAllocate(4 * KiB, 16, out byte* block))
        {
            blocks.Add((nuint)block);
            Assert.True(blocks.Count <= 16, "64 KiB hold 16 blocks of 4 KiB");
        }

        Assert.Equal(16, blocks.Count);
        Assert.Equal(4, allocator.RegionCount);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(16, 16));
        Assert.False(allocator.TryAllocate(65 * KiB, 16, out _));
        Assert.Equal(3L, allocator.Statistics.FailureCount);
        Assert.Equal((long)(64 * KiB), allocator.Statistics.Capacity);
        allocator.Deallocate((byte*)blocks[3], 4 * KiB, 16);
        Assert.True(allocator.TryAllocate(16, 16, out byte* small));
        allocator.Deallocate(small, 16, 16);
        blocks.RemoveAt(3);
        foreach (nuint block in blocks)
        {
            allocator.Deallocate((byte*)block, 4 * KiB, 16);
        }

        allocator.Validate();
    }

    [Fact]
    public void A_source_that_refuses_is_exhaustion_too()
    {
        using var allocator = new BTreeAllocator(new NativeMemorySource());
        Assert.Null(allocator.Statistics.Capacity);
        Assert.False(allocator.TryAllocate((nuint)1 << 50, 16, out byte* pointer));
        Assert.True(pointer == null);
        byte* block = allocator.Allocate(64, 16);
        Assert.False(allocator.TryGrowingReallocate(block, 64, (nuint)1 << 50, 16, out _));
        allocator.Deallocate(block, 64, 16);
    }

    [Fact]
    public void Bad_frees_throw_and_change_nothing()
    {
        using var allocator = Create(new NativeMemorySource());
        byte* block = allocator.Allocate(100, 16);
        byte* neighbour = allocator.Allocate(64, 16);
        byte* freed = allocator.Allocate(64, 16);
        byte* last = allocator.Allocate(64, 16);
        allocator.Deallocate(freed, 64, 16);
        byte* foreign = stackalloc byte[64];
        AllocatorStatistics before = allocator.Statistics;
        long freeBlocks = allocator.FreeBlockCount;

        void Refused(Action action, string expected)
        {
            var error = Assert.ThrowsAny<ArgumentException>(action);
            Assert.Contains(expected, error.Message, StringComparison.Ordinal);
            Assert.Equal(before, allocator.Statistics);
            Assert.Equal(freeBlocks, allocator.FreeBlockCount);
            allocator.Validate();
        }

        Refused(() => allocator.Deallocate(foreign, 64, 16), "was not allocated by this BTreeAllocator");
        Refused(() => allocator.Deallocate(block + 16, 64, 16), "is not a live block");
        Refused(() => allocator.Deallocate(freed, 64, 16), "double free");
        Refused(() => allocator.Deallocate(freed + 16, 16, 16), "is not a live block");
        Refused(() => allocator.Deallocate(block, 113, 16), "has 112 bytes");
        Refused(() => allocator.Deallocate(block, 96, 16), "has 112 bytes");
        Refused(() => allocator.TryGrowInPlace(block + 16, 64, 128, 16), "is not a live block");
        Refused(() => allocator.ShrinkingReallocate(block, 200, 16, 16), "has 112 bytes");

        // A size that rounds to the same block is the same block (IAllocator's tolerance).
        allocator.Deallocate(block, 97, 16);
        allocator.Deallocate(neighbour, 64, 16);
        allocator.Deallocate(last, 64, 16);
        Assert.Equal(1L, allocator.FreeBlockCount);
    }

    [Fact]
    public void Dispose_gives_everything_back_and_every_later_use_throws_ObjectDisposedException()
    {
        var source = new NativeMemorySource();
        var allocator = Create(source);
        byte* block = allocator.Allocate(64, 16);
        byte* large = allocator.Allocate(40 * KiB, 16);
        Assert.True(source.BytesObtained > 0);
        allocator.Dispose();
        Assert.Equal(0, source.BytesObtained);
        Assert.False(allocator.Owns(block));
        Assert.Throws<ObjectDisposedException>(() => allocator.Allocate(64, 16));
        Assert.Throws<ObjectDisposedException>(() => allocator.TryAllocate(64, 16, out _));
        Assert.Throws<ObjectDisposedException>(() => allocator.Deallocate(large, 40 * KiB, 16));
        allocator.Dispose();
        Assert.Equal(0, source.BytesObtained);
    }

    [Fact]
    public void Constructor_arguments_are_checked_naming_the_argument()
    {
        var source = new NativeMemorySource();
        Assert.Equal("source", Assert.Throws<ArgumentNullException>(() => new BTreeAllocator(null!)).ParamName);
        Assert.Equal("regionSize", Assert.Throws<ArgumentOutOfRangeException>(() => new BTreeAllocator(source, 0)).ParamName);
        Assert.Equal("regionSize", Assert.Throws<ArgumentOutOfRangeException>(() => new BTreeAllocator(source, 2 * KiB, KiB)).ParamName);
        Assert.Equal("maximumCapacity", Assert.Throws<ArgumentOutOfRangeException>(() => new BTreeAllocator(source, KiB, nuint.MaxValue)).ParamName);
        using var rounded = new BTreeAllocator(source, 1000);
        Assert.Equal(4 * KiB, rounded.RegionSize);
        Assert.Equal(0, source.BytesObtained);   // nothing is obtained before the first allocation
    }
}
