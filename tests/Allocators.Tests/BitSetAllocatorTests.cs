using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using static AllocHosting.Allocators.Tests.BitSetAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

public unsafe class BitSetAllocatorTests
{
    // ---- construction -------------------------------------------------------------------

    [Fact]
    public void Documentation_example_runs()
    {
        // The example in BitSetAllocator's type documentation.
        using var allocator = new BitSetAllocator(NativeMemorySource.Shared, blockSize: 64, memorySize: 64 * 1024);
        byte* buffer = allocator.Allocate(1000, 8);          // 16 blocks
        buffer = allocator.GrowingReallocate(buffer, 1000, 3000, 8);
        allocator.Deallocate(buffer, 3000, 8);
        Assert.Equal(allocator.BlockCount, allocator.FreeBlockCount);
    }

    [Theory]
    [InlineData(8u, 1u, 1u)]
    [InlineData(8u, 8u, 1u)]
    [InlineData(8u, 9u, 2u)]
    [InlineData(16u, 1000u, 63u)]
    [InlineData(64u, 64u * 100, 100u)]
    public void Block_count_is_memory_size_rounded_up_to_blocks(uint blockSize, uint memorySize, uint expectedBlocks)
    {
        using var allocator = new BitSetAllocator(new NativeMemorySource(), blockSize, memorySize);
        Assert.Equal((nuint)expectedBlocks, allocator.BlockCount);
        Assert.Equal((nuint)expectedBlocks, allocator.FreeBlockCount);
        Assert.Equal((nuint)blockSize, allocator.BlockSize);
        Assert.Equal((nuint)(expectedBlocks * blockSize), allocator.Range.Length);
        Assert.Equal((long)(expectedBlocks * blockSize), allocator.Statistics.Capacity);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(4u)]
    [InlineData(12u)]
    [InlineData(1u << 31)]
    public void Invalid_block_size_is_rejected(uint blockSize)
    {
        var error = Assert.Throws<ArgumentException>(() => new BitSetAllocator(new NativeMemorySource(), blockSize, 4096));
        Assert.Equal("blockSize", error.ParamName);
    }

    [Fact]
    public void Zero_memory_size_and_null_source_are_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new BitSetAllocator(new NativeMemorySource(), 8, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BitSetAllocator(new NativeMemorySource(), 8, nuint.MaxValue));
        Assert.Throws<ArgumentNullException>(() => new BitSetAllocator((IMemorySource)null!, 8, 4096));
    }

    [Fact]
    public void W_BS3_bit_set_has_a_word_per_64_blocks_so_every_block_is_usable()
    {
        // The seed sized the bit set as blocks / 64 BYTES: fewer than 64 blocks had no bit set at all.
        foreach (nuint blocks in new nuint[] { 1, 10, 63, 64, 65, 200 })
        {
            using var allocator = Create(8, blocks);
            Assert.True(allocator.TryAllocate(blocks * 8, 8, out byte* all), $"{blocks} blocks in one allocation");
            AssertSameAddress((byte*)allocator.Range.From, all);
            Assert.Equal((nuint)0, allocator.FreeBlockCount);
            allocator.Deallocate(all, blocks * 8, 8);
        }
    }

    [Fact]
    public void Blocks_are_aligned_to_the_block_size_even_from_a_finely_grained_source()
    {
        using var allocator = new BitSetAllocator(new NativeMemorySource(granularity: 8), 256, 256 * 10);
        Assert.True(Allocator.IsAligned(allocator.Range.From, 256));
        for (int i = 0; i < 10; i++)
        {
            Assert.True(Allocator.IsAligned((nuint)allocator.Allocate(1, 256), 256));
        }
    }

    [Fact]
    public void Dispose_releases_the_region_once_and_later_calls_throw_object_disposed()
    {
        var source = new NativeMemorySource();
        var allocator = new BitSetAllocator(source, 16, 16 * 100);
        Assert.True(source.BytesObtained > 0);
        byte* block = allocator.Allocate(16, 8);
        allocator.Dispose();
        allocator.Dispose();
        Assert.Equal(0, source.BytesObtained);
        Assert.Throws<ObjectDisposedException>(() => allocator.Allocate(16, 8));
        Assert.Throws<ObjectDisposedException>(() => allocator.Deallocate(block, 16, 8));
        Assert.Throws<ObjectDisposedException>(() => allocator.Reset());
        Assert.False(allocator.Owns(block));
    }

    [Theory]
    [InlineData((64u * 8) + 16, 64u)] // each word of 64 blocks costs 16 bytes: bit set and run starts
    [InlineData((64u * 8) + 15, 63u)]
    [InlineData((64u * 8) + 16 + 16 + 8, 65u)]
    [InlineData((128u * 8) + 32, 128u)]
    public void Caller_region_holds_as_many_blocks_as_fit_with_their_bit_set(uint regionSize, uint expectedBlocks)
    {
        byte* region = (byte*)NativeMemory.AlignedAlloc(regionSize, 64);
        try
        {
            using (var allocator = new BitSetAllocator(region, regionSize, 8))
            {
                Assert.Equal((nuint)expectedBlocks, allocator.BlockCount);
                Assert.Equal((nuint)region, allocator.Range.From);
                nuint words = (allocator.BlockCount + 63) / 64;
                Assert.True(allocator.Range.To + (words * 16) <= (nuint)region + regionSize, "the bit set and run starts fit in the region");
                FillWithSingleBlocks(allocator);
            }

            // The caller still owns the region: writing to it after Dispose is fine.
            new Span<byte>(region, (int)regionSize).Fill(0xCD);
        }
        finally
        {
            NativeMemory.AlignedFree(region);
        }
    }

    [Fact]
    public void Caller_region_that_is_too_small_or_null_is_rejected()
    {
        byte* region = stackalloc byte[32];
        Assert.Throws<ArgumentException>(() => new BitSetAllocator(region, 15, 8));
        Assert.Throws<ArgumentNullException>(() => new BitSetAllocator((byte*)null, 4096, 8));
    }

    // ---- single blocks and runs -----------------------------------------------------------

    [Fact]
    public void Single_block_allocation_is_freed_and_reused()
    {
        using var allocator = Create(16, 100);
        byte* first = allocator.Allocate(1, 1);
        AssertSameAddress((byte*)allocator.Range.From, first);
        Assert.Equal((nuint)99, allocator.FreeBlockCount);
        Assert.True(allocator.IsBlockAllocated(0));
        allocator.Deallocate(first, 1, 1);
        Assert.Equal((nuint)100, allocator.FreeBlockCount);
        Assert.False(allocator.IsBlockAllocated(0));
        AssertSameAddress(first, allocator.Allocate(16, 16));
    }

    [Fact]
    public void Consecutive_allocations_take_consecutive_blocks()
    {
        using var allocator = Create(8, 200);
        for (nuint i = 0; i < 150; i++)
        {
            Assert.Equal(i, BlockIndex(allocator, allocator.Allocate(8, 8)));
        }
    }

    [Fact]
    public void Run_spanning_two_words_is_placed_and_freed()
    {
        using var allocator = Create(8, 256);
        byte* head = allocator.Allocate(60 * 8, 8);
        byte* spanning = allocator.Allocate(10 * 8, 8);
        Assert.Equal((nuint)60, BlockIndex(allocator, spanning));
        AssertBlocks(allocator, 0, 70, allocated: true);
        AssertBlocks(allocator, 70, 186, allocated: false);
        allocator.Deallocate(spanning, 10 * 8, 8);
        AssertBlocks(allocator, 60, 10, allocated: false);
        allocator.Deallocate(head, 60 * 8, 8);
        Assert.Equal(allocator.BlockCount, allocator.FreeBlockCount);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }

    [Fact]
    public void Run_spanning_three_words_is_placed_and_freed()
    {
        using var allocator = Create(8, 256);
        allocator.Allocate(10 * 8, 8);
        byte* spanning = allocator.Allocate(130 * 8, 8);
        Assert.Equal((nuint)10, BlockIndex(allocator, spanning));
        AssertBlocks(allocator, 0, 140, allocated: true);
        Assert.False(allocator.IsBlockAllocated(140));
        allocator.Deallocate(spanning, 130 * 8, 8);
        AssertBlocks(allocator, 10, 246, allocated: false);
        Assert.Equal((nuint)246, ValidatedFreeBlockCount(allocator));
    }

    [Fact]
    public void W_BS2_allocation_of_exactly_64_blocks_is_recorded()
    {
        using var allocator = Create(8, 320);
        byte* first = allocator.Allocate(64 * 8, 8);
        AssertBlocks(allocator, 0, 64, allocated: true);
        Assert.Equal((nuint)256, allocator.FreeBlockCount);
        Assert.Equal((nuint)256, ValidatedFreeBlockCount(allocator));

        // The seed did not record the run, so the next request got the same blocks again.
        byte* second = allocator.Allocate(64 * 8, 8);
        AssertSameAddress(first + (64 * 8), second);

        // A run of one block at the end of a word followed by a whole word (the seed's "set top 64 bits").
        Assert.Equal((nuint)128, BlockIndex(allocator, allocator.Allocate(63 * 8, 8)));
        byte* spanning = allocator.Allocate(65 * 8, 8);
        Assert.Equal((nuint)191, BlockIndex(allocator, spanning));
        AssertBlocks(allocator, 0, 256, allocated: true);
        AssertBlocks(allocator, 256, 64, allocated: false);
        Assert.Equal((nuint)64, ValidatedFreeBlockCount(allocator));
    }

    [Theory]
    [InlineData(65u)]
    [InlineData(128u)]
    [InlineData(129u)]
    public void Allocations_of_more_than_64_blocks_are_recorded_exactly(uint blocks)
    {
        using var allocator = Create(8, 400);
        allocator.Allocate(3 * 8, 8);
        byte* run = allocator.Allocate(blocks * 8, 8);
        Assert.Equal((nuint)3, BlockIndex(allocator, run));
        AssertBlocks(allocator, 0, 3 + blocks, allocated: true);
        Assert.False(allocator.IsBlockAllocated(3 + blocks));
        Assert.Equal(400 - 3 - (nuint)blocks, ValidatedFreeBlockCount(allocator));
        allocator.Deallocate(run, blocks * 8, 8);
        Assert.Equal((nuint)397, allocator.FreeBlockCount);
        Assert.Equal((nuint)397, ValidatedFreeBlockCount(allocator));
    }

    [Fact]
    public void W_BS1_multi_block_free_really_frees_every_block()
    {
        using var allocator = Create(8, 128);
        allocator.Allocate(8, 8);
        byte* run = allocator.Allocate(5 * 8, 8);
        allocator.Allocate(8, 8);
        allocator.Deallocate(run, 5 * 8, 8);
        AssertBlocks(allocator, 1, 5, allocated: false);
        Assert.Equal((nuint)126, ValidatedFreeBlockCount(allocator));

        // A free that crosses a word boundary clears both partial words.
        byte* spanning = allocator.Allocate(70 * 8, 8);
        allocator.Deallocate(spanning, 70 * 8, 8);
        Assert.Equal((nuint)126, ValidatedFreeBlockCount(allocator));

        // All five freed blocks can be handed out again, one at a time.
        allocator.Reset();
        allocator.Allocate(8, 8);
        run = allocator.Allocate(5 * 8, 8);
        allocator.Allocate(122 * 8, 8); // full
        allocator.Deallocate(run, 5 * 8, 8);
        for (int i = 0; i < 5; i++)
        {
            AssertSameAddress(run + (i * 8), allocator.Allocate(8, 8));
        }

        Assert.False(allocator.TryAllocate(8, 8, out _));
    }

    // ---- alignment ----------------------------------------------------------------------

    [Fact]
    public void W_BS5_alignment_larger_than_the_block_size_aligns_the_start_for_any_run_length()
    {
        foreach (int exponent in new[] { 1, 2, 3, 4, 5, 6, 7, 8 })
        {
            foreach (nuint blocks in new nuint[] { 1, 3, 5, 7, 13, 63, 65, 100 })
            {
                using var allocator = Create(8, 2048);
                nuint alignment = (nuint)8 << exponent;
                for (int round = 0; round < 4; round++)
                {
                    allocator.Allocate(8 * (nuint)(round + 1), 8); // disturb the position
                    byte* pointer = allocator.Allocate(blocks * 8, alignment);
                    Assert.True(Allocator.IsAligned((nuint)pointer, alignment), $"{blocks} blocks aligned to {alignment}: 0x{(nuint)pointer:X}");
                    AssertBlocks(allocator, BlockIndex(allocator, pointer), blocks, allocated: true);
                }

                allocator.Validate();
            }
        }
    }

    [Fact]
    public void Alignment_is_measured_on_addresses_even_when_the_region_is_only_block_aligned()
    {
        byte* raw = (byte*)NativeMemory.AlignedAlloc(64 * 1024, 4096);
        try
        {
            // Blocks start 8 bytes past a page: block index multiples are not address multiples.
            using var allocator = new BitSetAllocator(raw + 8, (64 * 1024) - 8, 8);
            foreach (nuint alignment in new nuint[] { 16, 64, 512, 1024, 4096 })
            {
                foreach (nuint size in new nuint[] { 8, 24, 100, 600 })
                {
                    byte* pointer = allocator.Allocate(size, alignment);
                    Assert.True(Allocator.IsAligned((nuint)pointer, alignment), $"{size} bytes aligned to {alignment}");
                    Assert.True(allocator.Range.Contains((nuint)pointer, size));
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(raw);
        }
    }

    [Fact]
    public void W_BS6_alignments_beyond_64_blocks_are_served_or_fail_cleanly()
    {
        using var allocator = Create(8, 1024); // 8 KiB of blocks, aligned to the 4 KiB page
        allocator.Allocate(8, 8);
        byte* page = allocator.Allocate(8, 4096); // 512 blocks: e = 9 > 6
        Assert.True(Allocator.IsAligned((nuint)page, 4096));
        Assert.Equal((nuint)512, BlockIndex(allocator, page));

        // e = 27: the seed evaluated 1 << e as a 32-bit shift; no such aligned block exists here.
        long failures = allocator.Statistics.FailureCount;
        nuint free = allocator.FreeBlockCount;
        Assert.False(allocator.TryAllocate(8, Allocator.MaximumAlignment, out byte* none));
        Assert.True(none == null);
        Assert.Equal(free, allocator.FreeBlockCount);
        Assert.Equal(failures + 1, allocator.Statistics.FailureCount);
    }

    // ---- exhaustion and next fit --------------------------------------------------------

    [Fact]
    public void Exhaustion_then_next_fit_wraps_around_to_freed_blocks()
    {
        using var allocator = Create(8, 130);
        var blocks = FillWithSingleBlocks(allocator);
        Assert.False(allocator.TryAllocate(8, 8, out _));
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(8, 8));

        allocator.Deallocate(blocks[3], 8, 8);
        allocator.Deallocate(blocks[100], 8, 8);

        // Next fit: the cursor is at the last word, so the wrap-around finds block 3 first.
        AssertSameAddress(blocks[3], allocator.Allocate(8, 8));
        AssertSameAddress(blocks[100], allocator.Allocate(8, 8));
        Assert.False(allocator.TryAllocate(8, 8, out _));
    }

    [Fact]
    public void Next_fit_continues_after_the_last_allocation_rather_than_reusing_lower_blocks()
    {
        using var allocator = Create(8, 256);
        byte* a = allocator.Allocate(8, 8);
        allocator.Allocate(100 * 8, 8); // cursor now in word 1
        allocator.Deallocate(a, 8, 8);
        Assert.Equal((nuint)101, BlockIndex(allocator, allocator.Allocate(8, 8)));
    }

    [Fact]
    public void Wrap_around_finds_a_run_straddling_the_previous_cursor_word()
    {
        using var allocator = Create(8, 192);
        var blocks = FillWithSingleBlocks(allocator);

        // Put the cursor in word 1 (an allocation that wraps around to block 100).
        allocator.Deallocate(blocks[100], 8, 8);
        AssertSameAddress(blocks[100], allocator.Allocate(8, 8));

        // Free blocks 60..67: four at the end of word 0, four at the start of word 1.
        for (int i = 60; i < 68; i++)
        {
            allocator.Deallocate(blocks[i], 8, 8);
        }

        // The seed's wrap pass restarted its run count at word 0 and stopped before word 1.
        Assert.True(allocator.TryAllocate(8 * 8, 8, out byte* run));
        AssertSameAddress(blocks[60], run);
    }

    [Theory]
    [InlineData(1u)]
    [InlineData(63u)]
    [InlineData(65u)]
    [InlineData(100u)]
    [InlineData(130u)]
    public void Region_not_a_multiple_of_64_blocks_never_hands_out_memory_past_the_end(uint blockCount)
    {
        using var allocator = Create(16, blockCount);
        var blocks = FillWithSingleBlocks(allocator);
        Assert.Equal((int)blockCount, blocks.Count);
        Assert.Equal(blockCount, (uint)blocks.Select(b => (nuint)b).Distinct().Count());
        Assert.False(allocator.TryAllocate(1, 1, out _));

        // Multi-block requests near the end are refused too.
        allocator.Deallocate(blocks[^1], 16, 8);
        Assert.False(allocator.TryAllocate(32, 8, out _));
        Assert.True(allocator.TryAllocate(16, 8, out byte* last));
        AssertSameAddress(blocks[^1], last);
    }

    // ---- reset, zero size, statistics ---------------------------------------------------

    [Fact]
    public void Reset_frees_every_block_and_restarts_at_the_first_block()
    {
        using var allocator = Create(8, 100); // a partial last word: its padding must stay set
        for (int i = 0; i < 20; i++)
        {
            allocator.Allocate((nuint)((i % 7) + 1) * 8, 8);
        }

        allocator.Reset();
        Assert.Equal(allocator.BlockCount, allocator.FreeBlockCount);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        AssertSameAddress((byte*)allocator.Range.From, allocator.Allocate(8, 8));
        allocator.Reset();
        Assert.True(allocator.TryAllocate(100 * 8, 8, out byte* all));
        Assert.False(allocator.TryAllocate(1, 1, out _));
        allocator.Deallocate(all, 100 * 8, 8);
    }

    [Fact]
    public void Reset_frees_blocks_taken_by_growing_in_place_beyond_the_cursor_word()
    {
        using var allocator = Create(8, 300);
        byte* block = allocator.Allocate(8, 8);
        Assert.True(allocator.TryGrowInPlace(block, 8, 250 * 8, 8)); // words 0..3, cursor still in word 0
        allocator.Reset();
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
        Assert.True(allocator.TryAllocate(300 * 8, 8, out _));
    }

    [Fact]
    public void Zero_size_returns_the_sentinel_and_takes_no_block()
    {
        using var allocator = Create(8, 10);
        byte* nothing = allocator.Allocate(0, 64);
        Assert.True(nothing == Allocator.ZeroSizeSentinel);
        Assert.Equal((nuint)10, allocator.FreeBlockCount);
        allocator.Deallocate(nothing, 0, 64);
        Assert.Equal((nuint)0, allocator.GetUsableSize(0, 8));
        Assert.Equal(0, allocator.Statistics.AllocationCount);
    }

    [Fact]
    public void Statistics_count_whole_blocks_in_use()
    {
        using var allocator = Create(16, 64);
        byte* a = allocator.Allocate(1, 8);
        byte* b = allocator.Allocate(40, 8);
        var stats = allocator.Statistics;
        Assert.Equal(16 + 48, stats.BytesInUse);
        Assert.Equal(41, stats.TotalBytesAllocated);
        Assert.Equal(2, stats.AllocationCount);
        Assert.Equal(64 * 16, stats.Capacity);

        allocator.Deallocate(a, 1, 8);
        Assert.False(allocator.TryAllocate(64 * 16, 8, out _));
        stats = allocator.Statistics;
        Assert.Equal(48, stats.BytesInUse);
        Assert.Equal(64, stats.PeakBytesInUse);
        Assert.Equal(1, stats.DeallocationCount);
        Assert.Equal(1, stats.FailureCount);
        allocator.Deallocate(b, 40, 8);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }
}
