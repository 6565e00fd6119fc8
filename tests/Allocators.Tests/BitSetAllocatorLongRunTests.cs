using static AllocHosting.Allocators.Tests.BitSetAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Runs of whole bit set words: checked, taken and freed several words at a time, and found again
// at the cursor without a scan.
public unsafe class BitSetAllocatorLongRunTests
{
    [Theory]
    [InlineData(65u)]
    [InlineData(128u)]
    [InlineData(192u)]
    [InlineData(256u)]
    [InlineData(600u)]
    public void Word_aligned_long_run_is_reused_at_the_same_place_after_free(uint blocks)
    {
        using var allocator = Create(8, 2048);
        for (int round = 0; round < 4; round++)
        {
            byte* run = allocator.Allocate(blocks * 8, 8);
            Assert.Equal((nuint)0, BlockIndex(allocator, run));
            AssertBlocks(allocator, 0, blocks, allocated: true);
            Assert.False(allocator.IsBlockAllocated(blocks));
            Assert.Equal(2048 - (nuint)blocks, ValidatedFreeBlockCount(allocator));
            allocator.Deallocate(run, blocks * 8, 8);
            Assert.Equal((nuint)2048, allocator.FreeBlockCount);
            Assert.Equal((nuint)2048, ValidatedFreeBlockCount(allocator));
        }

        // Without a free in between, the next run still follows the first.
        byte* first = allocator.Allocate(blocks * 8, 8);
        byte* second = allocator.Allocate(blocks * 8, 8);
        Assert.Equal((nuint)blocks, BlockIndex(allocator, second));
        AssertBlocks(allocator, 0, 2 * blocks, allocated: true);
        Assert.False(allocator.IsBlockAllocated(2 * blocks));
        allocator.Deallocate(first, blocks * 8, 8);
        allocator.Deallocate(second, blocks * 8, 8);
        Assert.Equal((nuint)2048, ValidatedFreeBlockCount(allocator));
    }

    [Theory]
    [InlineData(128u)]
    [InlineData(192u)]
    [InlineData(256u)]
    [InlineData(600u)]
    public void Long_run_placed_mid_word_moves_once_to_a_word_boundary_and_stays_there(uint blocks)
    {
        using var allocator = Create(8, 2048);
        byte* head = allocator.Allocate(10 * 8, 8);
        byte* run = allocator.Allocate(blocks * 8, 8);
        Assert.Equal((nuint)10, BlockIndex(allocator, run));
        AssertBlocks(allocator, 0, 10 + blocks, allocated: true);
        Assert.False(allocator.IsBlockAllocated(10 + blocks));
        allocator.Deallocate(run, blocks * 8, 8);

        // Next fit resumes in the word where the run ended, which is free again: its start.
        nuint settled = ((10 + (nuint)blocks - 1) >> 6) << 6;
        for (int round = 0; round < 3; round++)
        {
            run = allocator.Allocate(blocks * 8, 8);
            Assert.Equal(settled, BlockIndex(allocator, run));
            AssertBlocks(allocator, settled, blocks, allocated: true);
            Assert.Equal(2048 - 10 - (nuint)blocks, ValidatedFreeBlockCount(allocator));
            allocator.Validate();
            allocator.Deallocate(run, blocks * 8, 8);
        }

        AssertBlocks(allocator, 0, 10, allocated: true);
        allocator.Deallocate(head, 10 * 8, 8);
        Assert.Equal((nuint)2048, ValidatedFreeBlockCount(allocator));
    }

    [Theory]
    [InlineData(500u, 512u)] // the second group of four words holds allocated blocks
    [InlineData(300u, 320u)] // the fifth whole word (past the vector) holds allocated blocks
    [InlineData(300u, 306u)] // the partial last word holds allocated blocks
    public void Long_run_that_does_not_fit_at_the_cursor_word_is_found_further_on_and_the_cursor_words_are_untouched(
        uint freedHead, uint requested)
    {
        using var allocator = Create(8, 2048);
        byte* head = allocator.Allocate(freedHead * 8, 8);
        byte* live = allocator.Allocate((600 - freedHead) * 8, 8);
        allocator.Deallocate(head, freedHead * 8, 8); // blocks [0, freedHead) free, the cursor in word 9

        byte* run = allocator.Allocate(requested * 8, 8);
        Assert.Equal((nuint)600, BlockIndex(allocator, run));
        AssertBlocks(allocator, 0, freedHead, allocated: false);
        AssertBlocks(allocator, freedHead, 600 + requested - freedHead, allocated: true);
        Assert.False(allocator.IsBlockAllocated(600 + requested));
        Assert.Equal(2048 - (600 - (nuint)freedHead) - requested, ValidatedFreeBlockCount(allocator));
        allocator.Validate();

        allocator.Deallocate(live, (600 - freedHead) * 8, 8);
        allocator.Deallocate(run, requested * 8, 8);
        Assert.Equal((nuint)2048, ValidatedFreeBlockCount(allocator));
    }

    [Theory]
    [InlineData(0u, 100u)] // the first group of four whole words
    [InlineData(0u, 400u)] // the second group: the first is put back
    [InlineData(0u, 530u)] // the ninth whole word, after two groups
    [InlineData(0u, 590u)] // the partial last word
    [InlineData(10u, 20u)] // the partial first word
    [InlineData(10u, 300u)]
    public void Double_free_of_a_long_run_with_one_block_already_free_changes_nothing(uint offset, uint hole)
    {
        const uint Blocks = 600;
        using var allocator = Create(8, 1024);
        if (offset != 0)
        {
            allocator.Allocate(offset * 8, 8);
        }

        // The run cut in three live blocks, [offset, hole), hole and (hole, offset + Blocks); then the
        // middle one freed, so the blocks of a run of Blocks at offset are all allocated but one.
        nuint inRun = hole - offset;
        byte* run = allocator.Allocate(inRun * 8, 8);
        Assert.Equal((nuint)offset, BlockIndex(allocator, run));
        byte* holeBlock = allocator.Allocate(8, 8);
        Assert.Equal((nuint)hole, BlockIndex(allocator, holeBlock));
        byte* tail = allocator.Allocate((Blocks - inRun - 1) * 8, 8);
        Assert.Equal((nuint)hole + 1, BlockIndex(allocator, tail));
        allocator.Deallocate(holeBlock, 8, 8);
        var statistics = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(run, Blocks * 8, 8));

        Assert.Equal(statistics, allocator.Statistics);
        Assert.Equal(1024 - (nuint)offset - Blocks + 1, allocator.FreeBlockCount);
        allocator.Validate();
        AssertBlocks(allocator, 0, hole, allocated: true);
        Assert.False(allocator.IsBlockAllocated(hole));
        AssertBlocks(allocator, hole + 1, offset + Blocks - hole - 1, allocated: true);

        allocator.Deallocate(run, inRun * 8, 8);
        allocator.Deallocate(tail, (Blocks - inRun - 1) * 8, 8);
        Assert.Equal(1024 - (nuint)offset, ValidatedFreeBlockCount(allocator));
    }

    [Fact]
    public void Long_runs_are_found_across_long_free_stretches_and_after_wrapping_around()
    {
        using var allocator = Create(8, 4096);
        Assert.Equal((nuint)0, BlockIndex(allocator, allocator.Allocate(8, 8)));
        byte* stretch = allocator.Allocate(700 * 8, 8);
        Assert.Equal((nuint)1, BlockIndex(allocator, stretch));
        Assert.Equal((nuint)701, BlockIndex(allocator, allocator.Allocate(8, 8)));
        allocator.Deallocate(stretch, 700 * 8, 8); // blocks 1 … 700 free: too short for 1000

        byte* thousand = allocator.Allocate(1000 * 8, 8);
        Assert.Equal((nuint)702, BlockIndex(allocator, thousand));

        // Everything after it, then a run that only fits in the stretch at the start.
        byte* rest = allocator.Allocate((4096 - 1702) * 8, 8);
        Assert.Equal((nuint)1702, BlockIndex(allocator, rest));
        byte* wrapped = allocator.Allocate(650 * 8, 8);
        Assert.Equal((nuint)1, BlockIndex(allocator, wrapped));

        AssertBlocks(allocator, 0, 651, allocated: true);
        AssertBlocks(allocator, 651, 50, allocated: false);
        AssertBlocks(allocator, 701, 4096 - 701, allocated: true);
        Assert.Equal((nuint)50, allocator.FreeBlockCount);
        Assert.Equal((nuint)50, ValidatedFreeBlockCount(allocator));
        Assert.False(allocator.TryAllocate(51 * 8, 8, out _));
    }
}
