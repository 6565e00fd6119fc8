using static AllocHosting.Allocators.Tests.TreeAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Issue 11, point 3, for MultipleBinarySearchTreeAllocator: a free, reallocation or resize of a
// pointer that is not a live block's start, or with a size of another size class, throws
// ArgumentException and changes nothing; a size of the same class is the same block.
public unsafe class TreeAllocatorBadFreeTests
{
    [Fact]
    public void A_free_larger_than_the_block_is_refused_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* first = allocator.Allocate(64, 8);
        byte* neighbour = allocator.Allocate(64, 8);
        Assert.True(neighbour == first + 64);
        AssertRefused(allocator, () => allocator.Deallocate(first, 128, 8));
        AssertRefused(allocator, () => allocator.Deallocate(first, 4096, 8));
        allocator.Deallocate(first, 64, 8);
        allocator.Deallocate(neighbour, 64, 8);
        AssertWhole(allocator);
    }

    [Fact]
    public void A_free_smaller_than_the_block_with_another_class_is_refused_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* block = allocator.Allocate(256, 256);
        AssertRefused(allocator, () => allocator.Deallocate(block, 32, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block, 128, 8));
        allocator.Deallocate(block, 256, 8);
        AssertWhole(allocator);
    }

    [Fact]
    public void A_size_of_the_same_class_is_the_same_block()
    {
        using var allocator = Create(4096);
        byte* block = allocator.Allocate(100, 8);
        allocator.Deallocate(block, 128, 8);
        block = allocator.Allocate(128, 8);
        allocator.Deallocate(block, 65, 8);
        block = allocator.Allocate(1, 8);
        allocator.Deallocate(block, 32, 8);
        AssertWhole(allocator);
    }

    [Fact]
    public void A_free_of_an_interior_pointer_is_refused_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* block = allocator.Allocate(256, 8);
        AssertRefused(allocator, () => allocator.Deallocate(block + 64, 64, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block + 128, 128, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block + 32, 32, 8));
        allocator.Deallocate(block, 256, 8);
        AssertWhole(allocator);
    }

    [Fact]
    public void A_double_free_is_still_reported_as_one()
    {
        using var allocator = Create(4096);
        byte* kept = allocator.Allocate(64, 8);
        byte* freed = allocator.Allocate(64, 8);
        allocator.Deallocate(freed, 64, 8);
        var error = AssertRefused(allocator, () => allocator.Deallocate(freed, 64, 8));
        Assert.Contains("double free", error.Message, StringComparison.Ordinal);
        allocator.Flush();
        error = AssertRefused(allocator, () => allocator.Deallocate(freed, 64, 8));
        Assert.Contains("double free", error.Message, StringComparison.Ordinal);
        allocator.Deallocate(kept, 64, 8);
        AssertWhole(allocator);
    }

    [Fact]
    public void A_pointer_past_a_live_block_is_refused_whether_the_next_block_is_free_or_live()
    {
        using var allocator = Create(4096);
        byte* block = allocator.Allocate(64, 8);
        AssertRefused(allocator, () => allocator.Deallocate(block + 64, 64, 8)); // its free buddy
        byte* small = allocator.Allocate(32, 8);
        Assert.True(small == block + 64);
        AssertRefused(allocator, () => allocator.Deallocate(block + 64, 64, 8)); // a live block of another class
        allocator.Deallocate(small, 32, 8);
        allocator.Deallocate(block, 64, 8);
        AssertWhole(allocator);
    }

    [Fact]
    public void Resizes_of_interior_pointers_or_with_another_class_are_refused_and_change_nothing()
    {
        using var allocator = Create(4096);
        byte* block = allocator.Allocate(256, 256);
        AssertRefused(allocator, () => allocator.TryGrowInPlace(block, 64, 512, 8));
        AssertRefused(allocator, () => allocator.TryGrowInPlace(block + 128, 128, 256, 8));
        AssertRefused(allocator, () => allocator.TryShrinkInPlace(block, 1024, 32, 8));
        AssertRefused(allocator, () => allocator.ShrinkingReallocate(block + 64, 64, 32, 8));
        AssertRefused(allocator, () => allocator.GrowingReallocate(block, 512, 2048, 8));
        AssertRefused(allocator, () => allocator.Reallocate(block + 128, 128, 3000, 8));

        // The real resizes still work, and the block keeps the map right through them.
        Assert.True(allocator.TryGrowInPlace(block, 256, 512, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block, 256, 8));
        Assert.True(allocator.TryShrinkInPlace(block, 512, 64, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block, 512, 8));
        allocator.Deallocate(block, 64, 8);
        AssertWhole(allocator);
    }

    [Fact]
    public void Over_size_blocks_are_checked_by_their_number_of_top_blocks()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 1 * MiB, 32, 64 * KiB);
        byte* block = allocator.Allocate(128 * KiB, 8);
        AssertRefused(allocator, () => allocator.Deallocate(block, 192 * KiB, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block, 64 * KiB, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block + (64 * KiB), 64 * KiB, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block + (64 * KiB), 128 * KiB, 8));
        Assert.True(allocator.TryGrowInPlace(block, 128 * KiB, 192 * KiB, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block, 128 * KiB, 8));
        Assert.True(allocator.TryShrinkInPlace(block, 192 * KiB, 100 * KiB, 8));
        AssertRefused(allocator, () => allocator.Deallocate(block, 192 * KiB, 8));
        allocator.Deallocate(block, (128 * KiB) - 1, 8);
        AssertWhole(allocator);
    }

    [Fact]
    public void Cache_hits_and_reset_keep_the_map_right()
    {
        using var allocator = Create(4096);
        byte* block = allocator.Allocate(64, 8);
        allocator.Deallocate(block, 64, 8);
        Assert.Equal(1, allocator.CachedBlockCount(1));
        Assert.True(allocator.Allocate(64, 8) == block); // a cache hit
        AssertRefused(allocator, () => allocator.Deallocate(block, 32, 8));
        allocator.Reset();
        AssertRefused(allocator, () => allocator.Deallocate(block, 64, 8));
        block = allocator.Allocate(64, 8);
        allocator.Deallocate(block, 64, 8);
        AssertWhole(allocator);
    }

    // The operation throws ArgumentException, and the trees, caches and statistics are as before.
    private static ArgumentException AssertRefused(MultipleBinarySearchTreeAllocator allocator, Action operation)
    {
        int[] trees = FreeBlockCounts(allocator);
        int[] cached = [.. Enumerable.Range(0, allocator.SizeClassCount).Select(allocator.CachedBlockCount)];
        var statistics = allocator.Statistics;
        var error = Assert.Throws<ArgumentException>(operation);
        Assert.Equal(trees, FreeBlockCounts(allocator));
        Assert.Equal(cached, Enumerable.Range(0, allocator.SizeClassCount).Select(allocator.CachedBlockCount));
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Validate();
        return error;
    }

    private static void AssertWhole(MultipleBinarySearchTreeAllocator allocator)
    {
        allocator.Validate();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        allocator.Flush();
        allocator.Validate();
    }
}
