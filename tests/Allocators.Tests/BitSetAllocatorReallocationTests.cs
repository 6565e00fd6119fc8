using static AllocHosting.Allocators.Tests.BitSetAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Shrinking frees tail blocks in place; growing extends in place or moves, and a failed grow
// leaves the block untouched.
public unsafe class BitSetAllocatorReallocationTests
{
    [Fact]
    public void Shrink_keeps_the_address_and_frees_the_tail()
    {
        using var allocator = Create(8, 128);
        byte* run = allocator.Allocate(80, 8);
        new Span<byte>(run, 80).Fill(0x5A);
        AssertSameAddress(run, allocator.ShrinkingReallocate(run, 80, 17, 8));
        AssertBlocks(allocator, 0, 3, allocated: true);
        AssertBlocks(allocator, 3, 7, allocated: false);
        Assert.Equal((nuint)125, allocator.FreeBlockCount);
        Assert.Equal(3 * 8, allocator.Statistics.BytesInUse);
        Assert.True(new Span<byte>(run, 17).IndexOfAnyExcept((byte)0x5A) < 0);
        AssertSameAddress(run + 24, allocator.Allocate(7 * 8, 8));
    }

    [Fact]
    public void Shrink_within_the_same_blocks_changes_nothing()
    {
        using var allocator = Create(16, 64);
        byte* block = allocator.Allocate(30, 8);
        Assert.True(allocator.TryShrinkInPlace(block, 30, 17, 8));
        Assert.Equal((nuint)62, allocator.FreeBlockCount);
    }

    [Fact]
    public void Grow_in_place_takes_the_following_free_blocks()
    {
        using var allocator = Create(8, 128);
        byte* run = allocator.Allocate(16, 8);
        new Span<byte>(run, 16).Fill(7);
        AssertSameAddress(run, allocator.GrowingReallocate(run, 16, 40, 8));
        AssertBlocks(allocator, 0, 5, allocated: true);
        Assert.Equal(40, allocator.Statistics.BytesInUse);
        Assert.True(new Span<byte>(run, 16).IndexOfAnyExcept((byte)7) < 0);
        Assert.True(allocator.TryGrowInPlace(run, 40, 70 * 8, 8), "across a word boundary");
        AssertBlocks(allocator, 0, 70, allocated: true);
        Assert.False(allocator.IsBlockAllocated(70));
    }

    [Fact]
    public void Grow_within_the_same_number_of_blocks_always_succeeds_in_place()
    {
        using var allocator = Create(64, 1);
        byte* block = allocator.Allocate(1, 8);
        Assert.Equal((nuint)64, allocator.GetUsableSize(1, 8));
        Assert.True(allocator.TryGrowInPlace(block, 1, 64, 8));
        AssertSameAddress(block, allocator.GrowingReallocate(block, 1, 64, 8));
        Assert.False(allocator.TryGrowInPlace(block, 64, 65, 8));
    }

    [Fact]
    public void Grow_moves_when_the_next_blocks_are_taken_and_frees_the_old_run()
    {
        using var allocator = Create(8, 128);
        byte* run = allocator.Allocate(16, 8);
        allocator.Allocate(8, 8);
        new Span<byte>(run, 16).Fill(9);
        byte* moved = allocator.GrowingReallocate(run, 16, 32, 8);
        Assert.NotEqual((nuint)run, (nuint)moved);
        Assert.True(new Span<byte>(moved, 16).IndexOfAnyExcept((byte)9) < 0);
        AssertBlocks(allocator, 0, 2, allocated: false);
        Assert.Equal((nuint)(128 - 5), allocator.FreeBlockCount);
    }

    [Fact]
    public void W_BS4_grow_failure_leaves_the_original_valid_and_allocated()
    {
        using var allocator = Create(8, 64);
        byte* run = allocator.Allocate(10 * 8, 8);
        allocator.Allocate(54 * 8, 8);
        new Span<byte>(run, 80).Fill(3);
        var before = allocator.Statistics;

        Assert.False(allocator.TryGrowingReallocate(run, 80, 81, 8, out byte* none));
        Assert.True(none == null);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.GrowingReallocate(run, 80, 81, 8));

        AssertBlocks(allocator, 0, 64, allocated: true);
        Assert.Equal((nuint)0, allocator.FreeBlockCount);
        Assert.Equal(before.BytesInUse, allocator.Statistics.BytesInUse);
        Assert.True(new Span<byte>(run, 80).IndexOfAnyExcept((byte)3) < 0);
        allocator.Deallocate(run, 80, 8); // still a live block: no double-free error
    }

    [Fact]
    public void Grow_reuses_its_own_blocks_when_only_an_overlapping_run_fits()
    {
        using var allocator = Create(8, 64);
        byte* front = allocator.Allocate(4 * 8, 8);
        byte* run = allocator.Allocate(6 * 8, 8);
        allocator.Allocate(54 * 8, 8);
        allocator.Deallocate(front, 4 * 8, 8);
        for (int i = 0; i < 48; i++)
        {
            run[i] = (byte)i;
        }

        // Blocks 0..3 free, 4..9 the run, 10..63 taken: only blocks 0..7 can hold 8 blocks.
        byte* moved = allocator.GrowingReallocate(run, 48, 64, 8);
        AssertSameAddress(front, moved);
        for (int i = 0; i < 48; i++)
        {
            Assert.Equal((byte)i, moved[i]);
        }

        AssertBlocks(allocator, 0, 8, allocated: true);
        AssertBlocks(allocator, 8, 2, allocated: false);
        Assert.Equal((nuint)2, allocator.FreeBlockCount);
        allocator.Validate();
    }
}
