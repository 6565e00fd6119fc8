using static AllocHosting.Allocators.Tests.BitSetAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Issue 11, point 3, for the bit set allocator: a free or resize that does not name a live block
// (its start and a size of its block count) throws ArgumentException and changes nothing; the
// real free still works afterwards.
public unsafe class BitSetAllocatorWrongFreeTests
{
    private const nuint BlockSize = 64;

    [Theory]
    [InlineData(4u, 3u)] // smaller: another block count
    [InlineData(4u, 1u)]
    [InlineData(4u, 5u)] // larger: into the live neighbour
    [InlineData(4u, 8u)]
    [InlineData(1u, 2u)]
    [InlineData(100u, 99u)] // runs across words
    [InlineData(100u, 101u)]
    [InlineData(256u, 257u)] // whole words (a 16 KiB block)
    [InlineData(256u, 192u)]
    public void A_free_with_a_size_of_another_block_count_is_refused(uint blocks, uint wrongBlocks)
    {
        using var allocator = Create(BlockSize, 1024);
        byte* block = allocator.Allocate(blocks * BlockSize, 8);
        byte* neighbour = allocator.Allocate(BlockSize, 8);
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, wrongBlocks * BlockSize, 8));
        allocator.Deallocate(block, blocks * BlockSize, 8);
        allocator.Deallocate(neighbour, BlockSize, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    // Two live neighbours that fill every block of the wrong range: only the run starts tell the
    // range is two blocks, wherever the second one's start lies (a whole word, a partial one).
    [Theory]
    [InlineData(256u, 64u)]
    [InlineData(256u, 128u)]
    [InlineData(256u, 30u)]
    [InlineData(100u, 60u)]
    [InlineData(3u, 70u)]
    [InlineData(2u, 3u)]
    public void A_free_with_a_size_that_covers_a_whole_live_neighbour_is_refused(uint blocks, uint neighbourBlocks)
    {
        using var allocator = Create(BlockSize, 1024);
        byte* block = allocator.Allocate(blocks * BlockSize, 8);
        byte* neighbour = allocator.Allocate(neighbourBlocks * BlockSize, 8);
        Assert.True(neighbour == block + (blocks * BlockSize), "the neighbour follows the block");
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, (blocks + neighbourBlocks) * BlockSize, 8));
        allocator.Deallocate(neighbour, neighbourBlocks * BlockSize, 8);
        allocator.Deallocate(block, blocks * BlockSize, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    [Theory]
    [InlineData(65u)]
    [InlineData(128u)]
    [InlineData(100u)]
    public void A_size_that_rounds_to_the_same_block_count_is_the_same_block(uint size)
    {
        using var allocator = Create(BlockSize, 1024);
        byte* block = allocator.Allocate(size, 8);
        byte* neighbour = allocator.Allocate(BlockSize, 8);
        allocator.Deallocate(block, 2 * BlockSize - 1, 8);
        allocator.Deallocate(neighbour, 1, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    [Fact]
    public void A_double_free_is_refused_also_once_the_blocks_belong_to_another_block()
    {
        using var allocator = Create(BlockSize, 1024);
        byte* keep = allocator.Allocate(BlockSize, 8);
        byte* block = allocator.Allocate(2 * BlockSize, 8);
        allocator.Deallocate(block, 2 * BlockSize, 8);
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, 2 * BlockSize, 8));

        // The same address handed out again with another length: the old size is not its size.
        allocator.Reset();
        keep = allocator.Allocate(BlockSize, 8);
        byte* longer = allocator.Allocate(4 * BlockSize, 8);
        AssertSameAddress(block, longer);
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, 2 * BlockSize, 8));
        allocator.Deallocate(longer, 4 * BlockSize, 8);
        allocator.Deallocate(keep, BlockSize, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    [Theory]
    [InlineData(4u, 1u, 1u)]
    [InlineData(4u, 1u, 3u)] // the tail of the block: once freed silently
    [InlineData(4u, 3u, 1u)]
    [InlineData(200u, 70u, 130u)]
    [InlineData(200u, 64u, 64u)]
    public void A_free_of_an_interior_pointer_is_refused(uint blocks, uint offset, uint freedBlocks)
    {
        using var allocator = Create(BlockSize, 1024);
        byte* block = allocator.Allocate(blocks * BlockSize, 8);
        byte* inside = block + (offset * BlockSize);
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(inside, freedBlocks * BlockSize, 8));
        AssertRefusedAndUnchanged(allocator, () => allocator.TryShrinkInPlace(inside, freedBlocks * BlockSize + 1, 1, 8));
        AssertRefusedAndUnchanged(allocator, () => allocator.TryGrowInPlace(inside, freedBlocks * BlockSize, (freedBlocks + 1) * BlockSize, 8));
        AssertRefusedAndUnchanged(allocator, () => allocator.GrowingReallocate(inside, freedBlocks * BlockSize, 2000 * BlockSize / 2, 8));
        allocator.Deallocate(block, blocks * BlockSize, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    [Fact]
    public void A_free_of_a_pointer_past_a_live_block_is_refused()
    {
        using var allocator = Create(BlockSize, 1024);
        byte* first = allocator.Allocate(2 * BlockSize, 8);
        byte* second = allocator.Allocate(3 * BlockSize, 8);
        byte* past = second + (3 * BlockSize); // a free block right after the last live one
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(past, BlockSize, 8));
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(past, 2 * BlockSize, 8));

        // The first block with a size that reaches into the second.
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(first, 3 * BlockSize, 8));
        allocator.Deallocate(first, 2 * BlockSize, 8);
        allocator.Deallocate(second, 3 * BlockSize, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    [Fact]
    public void Resizes_with_a_wrong_size_are_refused_and_in_place_resizes_keep_the_block_checkable()
    {
        using var allocator = Create(BlockSize, 1024);
        byte* block = allocator.Allocate(2 * BlockSize, 8);
        AssertRefusedAndUnchanged(allocator, () => allocator.TryGrowInPlace(block, 3 * BlockSize, 4 * BlockSize, 8));
        AssertRefusedAndUnchanged(allocator, () => allocator.TryShrinkInPlace(block, 3 * BlockSize, BlockSize, 8));
        AssertRefusedAndUnchanged(allocator, () => allocator.GrowingReallocate(block, BlockSize, 4 * BlockSize, 8));

        Assert.True(allocator.TryGrowInPlace(block, 2 * BlockSize, 4 * BlockSize, 8));
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, 2 * BlockSize, 8));
        Assert.True(allocator.TryShrinkInPlace(block, 4 * BlockSize, BlockSize, 8));
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, 4 * BlockSize, 8));
        byte* next = allocator.Allocate(BlockSize, 8); // right after the shrunk block
        AssertSameAddress(block + BlockSize, next);
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, 2 * BlockSize, 8));

        // A grow that moves the block: the old address is no block any more.
        byte* moved = allocator.GrowingReallocate(block, BlockSize, 8 * BlockSize, 8);
        Assert.NotEqual((nuint)block, (nuint)moved);
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, BlockSize, 8));
        allocator.Deallocate(moved, 8 * BlockSize, 8);
        allocator.Deallocate(next, BlockSize, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    [Fact]
    public void Reset_clears_the_run_starts()
    {
        using var allocator = Create(BlockSize, 1024);
        byte* block = allocator.Allocate(3 * BlockSize, 8);
        allocator.Reset();
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(block, 3 * BlockSize, 8));
        byte* one = allocator.Allocate(BlockSize, 8);
        byte* two = allocator.Allocate(BlockSize, 8);
        AssertSameAddress(block, one);
        AssertRefusedAndUnchanged(allocator, () => allocator.Deallocate(one, 2 * BlockSize, 8));
        allocator.Deallocate(one, BlockSize, 8);
        allocator.Deallocate(two, BlockSize, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    // Runs a call that must throw ArgumentException, and checks that the statistics, the free
    // block count and every block's state are what they were, and that Validate passes.
    private static void AssertRefusedAndUnchanged(BitSetAllocator allocator, Action call)
    {
        AllocatorStatistics statistics = allocator.Statistics;
        nuint free = allocator.FreeBlockCount;
        bool[] blocks = BlockStates(allocator);
        Assert.Throws<ArgumentException>(call);
        Assert.Equal(statistics, allocator.Statistics);
        Assert.Equal(free, ValidatedFreeBlockCount(allocator));
        Assert.Equal(blocks, BlockStates(allocator));
    }

    private static bool[] BlockStates(BitSetAllocator allocator)
    {
        var states = new bool[(int)allocator.BlockCount];
        for (int block = 0; block < states.Length; block++)
        {
            states[block] = allocator.IsBlockAllocated((nuint)block);
        }

        return states;
    }
}
