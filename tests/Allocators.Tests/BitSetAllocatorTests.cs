using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;
using CsCheck;

namespace AllocHosting.Allocators.Tests;

public unsafe class BitSetAllocatorTests
{
    private static BitSetAllocator Create(nuint blockSize, nuint blocks) =>
        new(new NativeMemorySource(), blockSize, blockSize * blocks);

    private static nuint BlockIndex(BitSetAllocator allocator, byte* pointer) =>
        ((nuint)pointer - allocator.Range.From) / allocator.BlockSize;

    private static void AssertSameAddress(byte* expected, byte* actual) =>
        Assert.Equal((nuint)expected, (nuint)actual);

    private static void AssertBlocks(BitSetAllocator allocator, nuint first, nuint count, bool allocated)
    {
        for (nuint block = first; block < first + count; block++)
        {
            Assert.Equal(allocated, allocator.IsBlockAllocated(block));
        }
    }

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
    [InlineData(64u * 8 + 8, 64u)]
    [InlineData(64u * 8 + 7, 63u)]
    [InlineData((64u * 8) + 8 + 8 + 8, 65u)]
    [InlineData((128u * 8) + 16, 128u)]
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
                Assert.True(allocator.Range.To + (words * 8) <= (nuint)region + regionSize, "the bit set fits in the region");
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
        Assert.Equal(allocator.BlockCount, allocator.CountFreeBlocks());
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
        Assert.Equal((nuint)246, allocator.CountFreeBlocks());
    }

    [Fact]
    public void W_BS2_allocation_of_exactly_64_blocks_is_recorded()
    {
        using var allocator = Create(8, 320);
        byte* first = allocator.Allocate(64 * 8, 8);
        AssertBlocks(allocator, 0, 64, allocated: true);
        Assert.Equal((nuint)256, allocator.FreeBlockCount);
        Assert.Equal((nuint)256, allocator.CountFreeBlocks());

        // The seed did not record the run, so the next request got the same blocks again.
        byte* second = allocator.Allocate(64 * 8, 8);
        AssertSameAddress(first + (64 * 8), second);

        // A run of one block at the end of a word followed by a whole word (the seed's "set top 64 bits").
        Assert.Equal((nuint)128, BlockIndex(allocator, allocator.Allocate(63 * 8, 8)));
        byte* spanning = allocator.Allocate(65 * 8, 8);
        Assert.Equal((nuint)191, BlockIndex(allocator, spanning));
        AssertBlocks(allocator, 0, 256, allocated: true);
        AssertBlocks(allocator, 256, 64, allocated: false);
        Assert.Equal((nuint)64, allocator.CountFreeBlocks());
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
        Assert.Equal(400 - 3 - (nuint)blocks, allocator.CountFreeBlocks());
        allocator.Deallocate(run, blocks * 8, 8);
        Assert.Equal((nuint)397, allocator.FreeBlockCount);
        Assert.Equal((nuint)397, allocator.CountFreeBlocks());
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
        Assert.Equal((nuint)126, allocator.CountFreeBlocks());

        // A free that crosses a word boundary clears both partial words.
        byte* spanning = allocator.Allocate(70 * 8, 8);
        allocator.Deallocate(spanning, 70 * 8, 8);
        Assert.Equal((nuint)126, allocator.CountFreeBlocks());

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

                Assert.Equal(allocator.FreeBlockCount, allocator.CountFreeBlocks());
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

    // ---- shrink and grow ----------------------------------------------------------------

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
        Assert.Equal(allocator.FreeBlockCount, allocator.CountFreeBlocks());
    }

    // ---- long runs (whole words) ---------------------------------------------------------

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
            Assert.Equal(2048 - (nuint)blocks, allocator.CountFreeBlocks());
            allocator.Deallocate(run, blocks * 8, 8);
            Assert.Equal((nuint)2048, allocator.FreeBlockCount);
            Assert.Equal((nuint)2048, allocator.CountFreeBlocks());
        }

        // Without a free in between, the next run still follows the first.
        byte* first = allocator.Allocate(blocks * 8, 8);
        byte* second = allocator.Allocate(blocks * 8, 8);
        Assert.Equal((nuint)blocks, BlockIndex(allocator, second));
        AssertBlocks(allocator, 0, 2 * blocks, allocated: true);
        Assert.False(allocator.IsBlockAllocated(2 * blocks));
        allocator.Deallocate(first, blocks * 8, 8);
        allocator.Deallocate(second, blocks * 8, 8);
        Assert.Equal((nuint)2048, allocator.CountFreeBlocks());
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
            Assert.Equal(2048 - 10 - (nuint)blocks, allocator.CountFreeBlocks());
            Assert.Equal(allocator.CountFreeBlocks(), allocator.FreeBlockCount);
            allocator.Deallocate(run, blocks * 8, 8);
        }

        AssertBlocks(allocator, 0, 10, allocated: true);
        allocator.Deallocate(head, 10 * 8, 8);
        Assert.Equal((nuint)2048, allocator.CountFreeBlocks());
    }

    [Theory]
    [InlineData(500u, 512u)] // the second group of four words holds allocated blocks
    [InlineData(300u, 320u)] // the fifth whole word (past the vector) holds allocated blocks
    [InlineData(300u, 306u)] // the partial last word holds allocated blocks
    public void Long_run_that_does_not_fit_at_the_cursor_word_is_found_further_on_and_the_cursor_words_are_untouched(
        uint freedHead, uint requested)
    {
        using var allocator = Create(8, 2048);
        byte* live = allocator.Allocate(600 * 8, 8);
        allocator.Deallocate(live, freedHead * 8, 8); // blocks [0, freedHead) free, the cursor stays in word 0
        live += freedHead * 8;

        byte* run = allocator.Allocate(requested * 8, 8);
        Assert.Equal((nuint)600, BlockIndex(allocator, run));
        AssertBlocks(allocator, 0, freedHead, allocated: false);
        AssertBlocks(allocator, freedHead, 600 + requested - freedHead, allocated: true);
        Assert.False(allocator.IsBlockAllocated(600 + requested));
        Assert.Equal(2048 - (600 - (nuint)freedHead) - requested, allocator.CountFreeBlocks());
        Assert.Equal(allocator.CountFreeBlocks(), allocator.FreeBlockCount);

        allocator.Deallocate(live, (600 - freedHead) * 8, 8);
        allocator.Deallocate(run, requested * 8, 8);
        Assert.Equal((nuint)2048, allocator.CountFreeBlocks());
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

        byte* run = allocator.Allocate(Blocks * 8, 8);
        Assert.Equal((nuint)offset, BlockIndex(allocator, run));
        nuint inRun = hole - offset;
        allocator.Deallocate(run + (inRun * 8), 8, 8);
        var statistics = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(run, Blocks * 8, 8));

        Assert.Equal(statistics, allocator.Statistics);
        Assert.Equal(1024 - (nuint)offset - Blocks + 1, allocator.FreeBlockCount);
        Assert.Equal(allocator.FreeBlockCount, allocator.CountFreeBlocks());
        AssertBlocks(allocator, 0, hole, allocated: true);
        Assert.False(allocator.IsBlockAllocated(hole));
        AssertBlocks(allocator, hole + 1, offset + Blocks - hole - 1, allocated: true);

        allocator.Deallocate(run, inRun * 8, 8);
        allocator.Deallocate(run + ((inRun + 1) * 8), (Blocks - inRun - 1) * 8, 8);
        Assert.Equal(1024 - (nuint)offset, allocator.CountFreeBlocks());
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
        Assert.Equal((nuint)50, allocator.CountFreeBlocks());
        Assert.False(allocator.TryAllocate(51 * 8, 8, out _));
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

    // ---- bad frees ----------------------------------------------------------------------

    [Fact]
    public void Free_of_foreign_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create(8, 100);
        byte* live = allocator.Allocate(24, 8);
        nuint free = allocator.FreeBlockCount;
        var statistics = allocator.Statistics;
        byte* outside = stackalloc byte[16];

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(outside, 8, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(live - 8, 8, 8)); // just below the region
        Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)allocator.Range.To, 8, 8)); // the bit set
        Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)allocator.Range.To - 8, 16, 8)); // runs off the end

        Assert.Equal(free, allocator.FreeBlockCount);
        Assert.Equal(free, allocator.CountFreeBlocks());
        Assert.Equal(statistics, allocator.Statistics);
        Assert.False(allocator.Owns(outside));
        Assert.True(allocator.Owns(live));
    }

    [Fact]
    public void Free_of_misaligned_inside_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create(16, 100);
        byte* live = allocator.Allocate(48, 8);
        nuint free = allocator.FreeBlockCount;
        var statistics = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(live + 8, 16, 8));
        Assert.Throws<ArgumentException>(() => allocator.ShrinkingReallocate(live + 1, 32, 16, 8));
        Assert.Throws<ArgumentException>(() => allocator.GrowingReallocate(live + 4, 32, 64, 8));

        Assert.Equal(free, allocator.FreeBlockCount);
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Deallocate(live, 48, 8);
    }

    [Fact]
    public void Double_free_throws_and_changes_nothing()
    {
        using var allocator = Create(8, 100);
        byte* first = allocator.Allocate(24, 8);
        byte* second = allocator.Allocate(24, 8);
        allocator.Deallocate(first, 24, 8);
        nuint free = allocator.FreeBlockCount;
        var statistics = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(first, 24, 8));

        // A run that is only partly allocated: nothing is freed, not even the live part.
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(first, 48, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(first, 80 * 8, 8)); // multi-word check
        Assert.Throws<ArgumentException>(() => allocator.GrowingReallocate(first, 24, 32, 8));

        Assert.Equal(free, allocator.FreeBlockCount);
        Assert.Equal(statistics, allocator.Statistics);
        AssertBlocks(allocator, 3, 3, allocated: true);
        allocator.Deallocate(second, 24, 8);
        Assert.Equal(allocator.BlockCount, allocator.CountFreeBlocks());
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
        Assert.Equal(allocator.BlockCount, allocator.CountFreeBlocks());
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
        Assert.Equal(allocator.BlockCount, allocator.CountFreeBlocks());
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

    // ---- property tests -----------------------------------------------------------------

    [Theory]
    [InlineData(8u)]
    [InlineData(16u)]
    [InlineData(64u)]
    public void Random_operations_agree_with_the_live_block_model(uint blockSize)
    {
        // Model: AllocatorModel's list of live blocks (no overlap, alignment, contents intact).
        var settings = new ModelSettings
        {
            MaxSize = 2048,
            MaxAlignmentLog2 = 9,
            ResetWeight = 1,
            MaxSteps = 150,
            Iterations = 60,
        };
        nuint memorySize = 40 * 1024 + 24; // not a whole number of words of blocks
        long steps = AllocatorModel.Run(
            settings,
            () => new BitSetAllocator(new NativeMemorySource(), blockSize, memorySize),
            allocator => allocator.Reset(),
            allocator =>
            {
                Assert.Equal(allocator.BlockCount, allocator.FreeBlockCount);
                Assert.Equal(allocator.BlockCount, allocator.CountFreeBlocks());
                Assert.Equal(0, allocator.Statistics.BytesInUse);
                nuint capacity = allocator.BlockCount * allocator.BlockSize;
                byte* all = allocator.Allocate(capacity, 8);
                AssertSameAddress((byte*)allocator.Range.From, all);
                allocator.Deallocate(all, capacity, 8);
            });
        Assert.True(steps >= 3000, $"only {steps} steps ran");
    }

    [Theory]
    [InlineData(0, 300, 150)]
    [InlineData(8, 300, 150)]
    [InlineData(40, 300, 150)]
    [InlineData(0, 2500, 700)] // long runs: whole words, vectorised checks and scans
    [InlineData(24, 2500, 700)]
    public void Random_operations_agree_with_a_block_occupancy_model(int regionOffset, int blockCount, int maxRun)
    {
        // Model: bool[] of block occupancy. Allocating n blocks marks exactly those blocks, freeing
        // clears them; the raw bit set words must match (block 64w + j is bit 63 − j of word w,
        // padding bits set), and an allocation fails only when no aligned free run exists.
        // The blocks start regionOffset bytes past a page, so block indices and address
        // alignment disagree unless the offset is zero.
        const nuint BlockSize = 8;
        nuint regionSize = ((nuint)blockCount * BlockSize) + ((((nuint)blockCount + 63) / 64) * sizeof(ulong));
        byte* page = (byte*)NativeMemory.AlignedAlloc(regionSize + 64, 4096);
        var step = Gen.Select(Gen.Int[0, 9], Gen.Int[1, maxRun], Gen.Int[0, 10], Gen.Int[0, 1 << 20]);
        try
        {
            long executed = 0;
            step.Array[1, 150].Sample(steps =>
            {
                using var allocator = new BitSetAllocator(page + regionOffset, regionSize, BlockSize);
                Assert.Equal((nuint)blockCount, allocator.BlockCount);
                var model = new bool[blockCount];
                var live = new List<(nuint First, nuint Count)>();
                foreach (var (kind, blocks, alignmentLog2, pick) in steps)
                {
                    if (kind < 6 || live.Count == 0)
                    {
                        nuint alignment = (nuint)1 << alignmentLog2;
                        bool fits = ModelHasAlignedRun(model, allocator.Range.From, BlockSize, (nuint)blocks, alignment);
                        bool allocated = allocator.TryAllocate((nuint)blocks * BlockSize, alignment, out byte* pointer);
                        Assert.Equal(fits, allocated);
                        if (allocated)
                        {
                            Assert.True(Allocator.IsAligned((nuint)pointer, alignment));
                            nuint first = BlockIndex(allocator, pointer);
                            for (nuint b = first; b < first + (nuint)blocks; b++)
                            {
                                Assert.False(model[b], $"block {b} handed out twice");
                                model[b] = true;
                            }

                            live.Add((first, (nuint)blocks));
                        }
                    }
                    else
                    {
                        int index = pick % live.Count;
                        var (first, count) = live[index];
                        allocator.Deallocate((byte*)(allocator.Range.From + (first * BlockSize)), count * BlockSize, 8);
                        Array.Fill(model, false, (int)first, (int)count);
                        live.RemoveAt(index);
                    }

                    AssertBitSetMatches(allocator, model);
                }

                Interlocked.Add(ref executed, steps.Length);
            }, iter: 60, threads: 1);
            Assert.True(executed >= 3000, $"only {executed} steps ran");
        }
        finally
        {
            NativeMemory.AlignedFree(page);
        }
    }

    private static bool ModelHasAlignedRun(bool[] model, nuint blocksStart, nuint blockSize, nuint count, nuint alignment)
    {
        for (nuint first = 0; first + count <= (nuint)model.Length; first++)
        {
            if (!Allocator.IsAligned(blocksStart + (first * blockSize), alignment))
            {
                continue;
            }

            int taken = Array.IndexOf(model, true, (int)first, (int)count);
            if (taken < 0)
            {
                return true;
            }

            // No run can start before the allocated block just found (keeps long runs linear).
            first = (nuint)taken;
        }

        return false;
    }

    private static void AssertBitSetMatches(BitSetAllocator allocator, bool[] model)
    {
        // The bit set follows the blocks in the region.
        ulong* words = (ulong*)allocator.Range.To;
        int wordCount = (model.Length + 63) / 64;
        int free = 0;
        for (int block = 0; block < wordCount * 64; block++)
        {
            bool set = (words[block / 64] & (1UL << (63 - (block % 64)))) != 0;
            bool expected = block >= model.Length || model[block];
            Assert.True(expected == set, $"block {block}: bit is {set}, model says {expected}");
            free += expected ? 0 : 1;
        }

        Assert.Equal((nuint)free, allocator.FreeBlockCount);
        Assert.Equal((long)(model.Length - free) * (long)allocator.BlockSize, allocator.Statistics.BytesInUse);
    }

    private static List<Pointer> FillWithSingleBlocks(BitSetAllocator allocator)
    {
        var blocks = new List<Pointer>();
        while (allocator.TryAllocate(1, 1, out byte* pointer))
        {
            Assert.True(allocator.Range.Contains((nuint)pointer, allocator.BlockSize), $"0x{(nuint)pointer:X} lies in the blocks");
            blocks.Add(pointer);
        }

        Assert.Equal(allocator.BlockCount, (nuint)blocks.Count);
        Assert.Equal((nuint)0, allocator.FreeBlockCount);
        return blocks;
    }

    /// <summary>A pointer that can live in a list.</summary>
    private readonly record struct Pointer(nuint Address)
    {
        public static implicit operator Pointer(byte* pointer) => new((nuint)pointer);

        public static implicit operator byte*(Pointer pointer) => (byte*)pointer.Address;

        public static explicit operator nuint(Pointer pointer) => pointer.Address;
    }
}
