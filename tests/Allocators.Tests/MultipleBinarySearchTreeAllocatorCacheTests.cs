using static AllocHosting.Allocators.Tests.TreeAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Deferred coalescing: the per-class caches of freed blocks, their limits and their flushes.
public unsafe class MultipleBinarySearchTreeAllocatorCacheTests
{
    [Fact]
    public void Alloc_free_ping_pong_reuses_the_cached_block_without_touching_the_trees()
    {
        using var allocator = Create(64 * KiB);
        byte* first = allocator.Allocate(64, 8);
        allocator.Deallocate(first, 64, 8);
        int[] trees = FreeBlockCounts(allocator);
        Assert.Equal(1, allocator.CachedBlockCount(1));
        for (int i = 0; i < 100; i++)
        {
            byte* pointer = allocator.Allocate(64, 8);
            Assert.True(pointer == first);
            Assert.Equal(0, allocator.CachedBlockCount(1));
            Assert.Equal(64, allocator.Statistics.BytesInUse);
            allocator.Deallocate(pointer, 64, 8);
            Assert.Equal(trees, FreeBlockCounts(allocator));
        }

        Assert.Equal(0, allocator.Statistics.BytesInUse); // a cached block is not in use
        allocator.Validate();
    }

    [Fact]
    public void Cache_limits_are_bounded_in_count_and_bytes_but_keep_at_least_one_block()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 64 * MiB);
        for (int k = 0; k < allocator.SizeClassCount; k++)
        {
            int limit = allocator.CachedBlockLimit(k);
            Assert.InRange(limit, 1, MultipleBinarySearchTreeAllocator.MaximumCachedBlocksPerClass);
            nuint blockSize = allocator.MinimumBlockSize << k;
            Assert.True((nuint)limit * blockSize <= Math.Max(256 * KiB, blockSize), $"class {k} caches {limit} blocks");
        }

        Assert.Equal(MultipleBinarySearchTreeAllocator.MaximumCachedBlocksPerClass, allocator.CachedBlockLimit(0));
        Assert.Equal(1, allocator.CachedBlockLimit(15));

        // A small region caches little: at most 1/32 of its capacity per class, but one block always.
        using var small = Create(4 * KiB);
        Assert.Equal(4, small.CachedBlockLimit(0));
        Assert.Equal(1, small.CachedBlockLimit(7));
    }

    [Fact]
    public void Frees_beyond_the_cache_limit_coalesce_into_the_trees()
    {
        using var allocator = Create(64 * KiB);
        int[] initial = FreeBlockCounts(allocator);
        int limit = allocator.CachedBlockLimit(0);
        Assert.Equal(16, limit);
        nuint[] blocks = [.. Enumerable.Range(0, limit + 2).Select(_ => Offset(allocator, allocator.Allocate(32, 8)))];
        Assert.Equal(Enumerable.Range(0, limit + 2).Select(i => (nuint)(i * 32)), blocks);

        foreach (nuint offset in blocks)
        {
            allocator.Deallocate((byte*)(allocator.Range.From + offset), 32, 8);
        }

        // The first 16 wait in the cache; the last two (buddies at 512 and 544) overflowed and merged
        // with each other and with the free blocks above them, up to a 512-byte block at 512.
        Assert.Equal(limit, allocator.CachedBlockCount(0));
        Assert.Equal(0, allocator.FreeBlockCount(0));
        allocator.Validate();
        Assert.Equal(512u, Offset(allocator, allocator.Allocate(512, 512)));
        Assert.Equal(limit, allocator.CachedBlockCount(0));

        allocator.Deallocate((byte*)(allocator.Range.From + 512), 512, 512);
        allocator.Flush();
        Assert.Equal(initial, FreeBlockCounts(allocator));
        Assert.All(Enumerable.Range(0, allocator.SizeClassCount), k => Assert.Equal(0, allocator.CachedBlockCount(k)));
        allocator.Validate();
    }

    [Fact]
    public void A_request_that_fits_only_after_coalescing_flushes_the_caches_and_succeeds()
    {
        using var allocator = Create(4 * KiB);
        nuint[] blocks = [.. Enumerable.Range(0, 128).Select(_ => (nuint)allocator.Allocate(32, 8))];
        Assert.True(IsEmpty(allocator));
        foreach (nuint block in blocks)
        {
            allocator.Deallocate((byte*)block, 32, 8);
        }

        Assert.Equal(allocator.CachedBlockLimit(0), allocator.CachedBlockCount(0));
        Assert.True(allocator.CachedBlockLimit(0) > 0);
        long failures = allocator.Statistics.FailureCount;

        byte* whole = allocator.Allocate(4 * KiB, 4 * KiB);
        Assert.True(whole == (byte*)allocator.Range.From);
        Assert.Equal(0, allocator.CachedBlockCount(0));
        Assert.Equal(4096, allocator.Statistics.BytesInUse);
        Assert.Equal(failures, allocator.Statistics.FailureCount);
        allocator.Validate();
    }

    [Fact]
    public void An_over_size_request_that_fits_only_after_coalescing_flushes_the_caches_and_succeeds()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 2 * MiB, 32, 64 * KiB);
        byte* top = allocator.Allocate(64 * KiB, 8);
        allocator.Deallocate(top, 64 * KiB, 8);
        Assert.Equal(1, allocator.CachedBlockCount(11));
        byte* all = allocator.Allocate(2 * MiB, 8);
        Assert.True(all == (byte*)allocator.Range.From);
        Assert.Equal(0, allocator.CachedBlockCount(11));
        allocator.Validate();
    }

    [Fact]
    public void A_request_that_does_not_fit_even_after_coalescing_still_fails_and_keeps_the_live_blocks()
    {
        using var allocator = Create(4 * KiB);
        byte* kept = allocator.Allocate(32, 8);
        byte* freed = allocator.Allocate(64, 8);
        allocator.Deallocate(freed, 64, 8);
        Assert.False(allocator.TryAllocate(4 * KiB, 8, out byte* none));
        Assert.True(none == null);
        Assert.Equal(32, allocator.Statistics.BytesInUse);
        Assert.Equal(1, allocator.Statistics.FailureCount);
        allocator.Validate();
        allocator.Deallocate(kept, 32, 8);
        allocator.Flush();
        AssertCounts(allocator, 0, 0, 0, 0, 0, 0, 0, 1);
    }

    [Fact]
    public void Double_free_of_a_cached_block_throws_and_changes_nothing()
    {
        using var allocator = Create(4 * KiB);
        byte* a = allocator.Allocate(64, 8);
        byte* b = allocator.Allocate(64, 8);
        byte* c = allocator.Allocate(64, 8);
        allocator.Deallocate(a, 64, 8);
        allocator.Deallocate(b, 64, 8); // both cached, a below b in the list
        Assert.Equal(2, allocator.CachedBlockCount(1));
        int[] trees = FreeBlockCounts(allocator);
        var statistics = allocator.Statistics;

        var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(a, 64, 8));
        Assert.Contains("double free", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(b, 64, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(b, 33, 64));

        Assert.Equal(2, allocator.CachedBlockCount(1));
        Assert.Equal(trees, FreeBlockCounts(allocator));
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Validate();
        Assert.True(allocator.Allocate(64, 8) == b);
        Assert.True(allocator.Allocate(64, 8) == a);
        _ = c;
    }

    [Fact]
    public void Double_free_of_a_block_merged_into_a_larger_free_block_throws_and_changes_nothing()
    {
        using var allocator = Create(4 * KiB);
        byte* lower = allocator.Allocate(32, 8);
        byte* upper = allocator.Allocate(32, 8);
        byte* kept = allocator.Allocate(64, 8);
        Assert.True(upper == lower + 32 && kept == lower + 64);
        allocator.Deallocate(lower, 32, 8);
        allocator.Deallocate(upper, 32, 8);
        allocator.Flush(); // merged into one 64-byte block at `lower`
        AssertCounts(allocator, 0, 1, 1, 1, 1, 1, 1, 0);
        var statistics = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(lower, 32, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(upper, 32, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(lower, 64, 8));

        AssertCounts(allocator, 0, 1, 1, 1, 1, 1, 1, 0);
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Validate();
    }

    [Fact]
    public void A_live_block_whose_data_looks_like_a_free_stamp_is_still_freed()
    {
        using var allocator = Create(4 * KiB);
        byte* a = allocator.Allocate(64, 8);
        allocator.Deallocate(a, 64, 8);
        nuint stamp = ((nuint*)a)[3];
        byte* again = allocator.Allocate(64, 8);
        Assert.True(again == a);
        ((nuint*)again)[3] = stamp; // the caller's data happens to equal the stamp
        allocator.Deallocate(again, 64, 8);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Fact]
    public void Growing_in_place_takes_a_cached_buddy()
    {
        using var allocator = Create(4 * KiB);
        byte* pointer = allocator.Allocate(32, 8);
        byte* buddy = allocator.Allocate(32, 8);
        Assert.True(buddy == pointer + 32);
        allocator.Deallocate(buddy, 32, 8);
        Assert.Equal(1, allocator.CachedBlockCount(0));
        Assert.True(allocator.TryGrowInPlace(pointer, 32, 64, 8));
        Assert.Equal(0, allocator.CachedBlockCount(0));
        Assert.Equal(64, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Fact]
    public void Reset_empties_the_caches()
    {
        using var allocator = Create(64 * KiB);
        int[] initial = FreeBlockCounts(allocator);
        foreach (nuint size in new nuint[] { 32, 64, 1000, 4096, 32 })
        {
            allocator.Deallocate(allocator.Allocate(size, 8), size, 8);
        }

        Assert.Equal(1, allocator.CachedBlockCount(0));
        allocator.Reset();
        Assert.All(Enumerable.Range(0, allocator.SizeClassCount), k => Assert.Equal(0, allocator.CachedBlockCount(k)));
        Assert.Equal(initial, FreeBlockCounts(allocator));
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Fact]
    public void Flush_of_a_disposed_allocator_throws()
    {
        var allocator = Create(4 * KiB);
        allocator.Flush(); // nothing cached: nothing to do
        allocator.Dispose();
        Assert.Throws<ObjectDisposedException>(allocator.Flush);
    }

    [Fact]
    public void Validate_catches_a_corrupted_cache()
    {
        using var allocator = Create(4 * KiB);
        byte* a = allocator.Allocate(64, 8);
        byte* b = allocator.Allocate(64, 8);
        byte* live = allocator.Allocate(64, 8);
        allocator.Deallocate(a, 64, 8);
        allocator.Deallocate(b, 64, 8); // the cache: b -> a
        Assert.Equal(2, allocator.CachedBlockCount(1)); // the cache is LIFO: b, then a (the corruptions below rely on it)
        allocator.Validate();
        var head = (nuint*)b;

        void Expect(string fragment)
        {
            var error = Assert.Throws<InvalidOperationException>(allocator.Validate);
            Assert.Contains(fragment, error.Message, StringComparison.Ordinal);
        }

        nuint link = head[0];
        head[0] = 0; // the list ends early
        Expect("holds 1 blocks but counts 2");
        head[0] = (nuint)b; // a cycle
        Expect("more blocks than it counts");
        head[0] = (nuint)(a + 32); // misaligned
        Expect("not aligned");
        head[0] = (nuint)live; // a live block: no stamp
        Expect("lost its free stamp");
        head[0] = link;
        allocator.Validate();

        head[3] ^= 1;
        Expect("lost its free stamp");
        head[3] ^= 1;
        allocator.Validate();

        // A free tree block (the 256-byte block left by the first split) linked into the cache.
        nuint treeBlock = allocator.Range.From + 256;
        Assert.Equal(1, allocator.FreeBlockCount(3));
        head[0] = treeBlock;
        Expect("overlap");
        head[0] = link;
        allocator.Validate();
    }
}
