using static AllocHosting.Allocators.Tests.TreeAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Freed buddies merge, cascading up to the top class, and freeing everything restores the
// initial carving.
public unsafe class MultipleBinarySearchTreeAllocatorCoalescingTests
{
    // W-MB1: the seed freed `diff` (one block) instead of two when merging a pair, leaking a block.
    [Fact]
    public void W_MB1_freeing_two_adjacent_32_byte_blocks_lets_a_64_byte_allocation_succeed()
    {
        using var allocator = Create(64);
        byte* first = allocator.Allocate(32, 8);
        byte* second = allocator.Allocate(32, 8);
        Assert.True(IsEmpty(allocator));
        allocator.Deallocate(first, 32, 8);
        allocator.Deallocate(second, 32, 8);
        allocator.Flush();
        Assert.Equal([0, 1], FreeBlockCounts(allocator).Take(2));
        Assert.True(allocator.Allocate(64, 8) == first);
        Assert.True(IsEmpty(allocator));
        allocator.Validate();
    }

    // W-MB2: a block freed between two free neighbours made the seed re-insert an existing node.
    [Fact]
    public void W_MB2_freeing_three_blocks_in_a_row_with_the_middle_last_keeps_the_trees_valid()
    {
        using var allocator = Create(128);
        nuint[] blocks = [.. Enumerable.Range(0, 4).Select(_ => Offset(allocator, allocator.Allocate(32, 32)))];
        Assert.Equal([0u, 32u, 64u, 96u], blocks.Order());
        byte* at(nuint offset) => (byte*)(allocator.Range.From + offset);

        allocator.Deallocate(at(32), 32, 32);
        allocator.Deallocate(at(96), 32, 32);
        allocator.Validate();
        allocator.Deallocate(at(64), 32, 32); // between two free blocks: merges with its buddy at 96
        allocator.Validate();
        allocator.Flush();
        allocator.Validate();
        Assert.Equal([1, 1, 0], FreeBlockCounts(allocator).Take(3));
        Assert.True(allocator.Allocate(64, 64) == at(64));
        allocator.Deallocate(at(64), 64, 64);
        allocator.Deallocate(at(0), 32, 32);
        allocator.Flush();
        Assert.Equal([0, 0, 1], FreeBlockCounts(allocator).Take(3));
        allocator.Validate();
    }

    // Merging any two adjacent blocks of one size (not only buddies), as the seed intended, can
    // strand memory: freeing 0, 64, 32, 96 would leave 32@0, 64@32, 32@96 with nothing to merge.
    [Fact]
    public void Freeing_four_blocks_in_every_order_restores_the_whole_128_byte_block()
    {
        int[][] orders = [.. Permutations([0, 1, 2, 3])];
        Assert.Equal(24, orders.Length);
        foreach (int[] order in orders)
        {
            using var allocator = Create(128);
            nuint[] sorted = [.. Enumerable.Range(0, 4).Select(_ => (nuint)allocator.Allocate(32, 8)).Order()];
            foreach (int index in order)
            {
                allocator.Deallocate((byte*)sorted[index], 32, 8);
                allocator.Validate();
            }

            allocator.Flush();
            allocator.Validate();
            AssertCounts(allocator, 0, 0, 1);
            Assert.True(allocator.Allocate(128, 128) == (byte*)sorted[0]);
        }
    }

    // W-MB4: the seed merged top-class blocks into a class past the end of its tree array.
    [Fact]
    public void W_MB4_top_class_blocks_are_never_merged_and_a_2_MiB_request_takes_two_contiguous_ones()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 2 * MiB);
        byte* first = allocator.Allocate(MiB, 8);
        byte* second = allocator.Allocate(MiB, 8);
        Assert.True(second == first + MiB);
        allocator.Deallocate(second, MiB, 8);
        allocator.Deallocate(first, MiB, 8);
        allocator.Flush();
        Assert.Equal(2, allocator.FreeBlockCount(15));
        allocator.Validate();

        byte* both = allocator.Allocate(2 * MiB, 4096);
        Assert.True(both == first);
        Assert.Equal(0, allocator.FreeBlockCount(15));
        Assert.Equal((long)(2 * MiB), allocator.Statistics.BytesInUse);

        // A size above the top class on free comes back as individual top-class blocks.
        allocator.Deallocate(both, (2 * MiB) - 5, 4096);
        Assert.Equal(2, allocator.FreeBlockCount(15));
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Fact]
    public void An_over_size_request_without_enough_contiguous_top_blocks_fails_and_changes_nothing()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 3 * MiB);
        byte* a = allocator.Allocate(MiB, 8);
        byte* b = allocator.Allocate(MiB, 8);
        byte* c = allocator.Allocate(MiB, 8);
        allocator.Deallocate(a, MiB, 8);
        allocator.Deallocate(c, MiB, 8);
        var before = allocator.Statistics;

        Assert.False(allocator.TryAllocate(2 * MiB, 8, out byte* none));
        Assert.True(none == null);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(4 * MiB, 8));
        Assert.Equal(2, allocator.FreeBlockCount(15));
        Assert.Equal(before.BytesInUse, allocator.Statistics.BytesInUse);
        Assert.Equal(before.FailureCount + 2, allocator.Statistics.FailureCount);

        allocator.Deallocate(b, MiB, 8);
        Assert.True(allocator.Allocate(3 * MiB, 8) == a);
        allocator.Validate();
    }

    [Fact]
    public void An_over_size_request_honours_its_alignment_by_skipping_unaligned_runs()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 4 * MiB);
        nuint start = allocator.Range.From;
        byte* block = allocator.Allocate(2 * MiB, 2 * MiB);
        Assert.True(Allocator.IsAligned((nuint)block, 2 * MiB));
        Assert.True((nuint)block - start <= 2 * MiB);
        allocator.Validate();
    }
}
