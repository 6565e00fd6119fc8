using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;
using CsCheck;

namespace AllocHosting.Allocators.Tests;

public unsafe class MultipleBinarySearchTreeAllocatorTests
{
    private const nuint KiB = 1024;
    private const nuint MiB = 1024 * 1024;

    // 4 KiB-aligned regions: every test region below 4 KiB is carved exactly as in the seed.
    private static readonly NativeMemorySource PageSource = new(4096);

    // Regions aligned to the default top class, so that they carve into whole 1 MiB blocks.
    private static readonly NativeMemorySource MiBSource = new(MiB);

    private static MultipleBinarySearchTreeAllocator Create(nuint size) => new(PageSource, size);

    private static nuint Offset(MultipleBinarySearchTreeAllocator allocator, byte* pointer) =>
        (nuint)pointer - allocator.Range.From;

    private static bool IsEmpty(MultipleBinarySearchTreeAllocator allocator) => !allocator.TryAllocate(1, 1, out _);

    // ---- The seed's six tests (§13.1–13.6) with the offsets the algorithm gives ----

    [Theory]
    [InlineData(32u)]
    [InlineData(64u)]
    [InlineData(96u)]
    [InlineData(128u)]
    [InlineData(160u)]
    [InlineData(192u)]
    [InlineData(256u)]
    public void Repeated_small_allocations_use_every_32_byte_block_then_the_allocator_is_empty(uint size)
    {
        using var allocator = Create(size);
        var offsets = new List<nuint>();
        for (uint i = 0; i < size / 32; i++)
        {
            offsets.Add(Offset(allocator, allocator.Allocate(1, 1)));
            allocator.Validate();
        }

        Assert.True(IsEmpty(allocator));
        Assert.Equal(Enumerable.Range(0, (int)(size / 32)).Select(i => (nuint)(i * 32)), offsets.Order());
    }

    [Fact]
    public void Repeated_small_allocations_in_192_bytes_take_offsets_128_160_0_32_64_96()
    {
        using var allocator = Create(192);
        nuint[] offsets = [.. Enumerable.Range(0, 6).Select(_ => Offset(allocator, allocator.Allocate(1, 1)))];
        Assert.Equal([128, 160, 0, 32, 64, 96], offsets);
        Assert.True(IsEmpty(allocator));
    }

    [Fact]
    public void Mixed_allocations_take_offsets_0_128_64_32_then_the_allocator_is_empty()
    {
        using var allocator = Create(256);
        Assert.Equal(0u, Offset(allocator, allocator.Allocate(32, 8)));
        Assert.Equal(128u, Offset(allocator, allocator.Allocate(128, 8)));
        Assert.Equal(64u, Offset(allocator, allocator.Allocate(64, 8)));
        Assert.Equal(32u, Offset(allocator, allocator.Allocate(32, 8)));
        Assert.True(IsEmpty(allocator));
    }

    [Fact]
    public void Shrinking_within_a_block_keeps_the_address_and_all_32_bytes()
    {
        using var allocator = Create(256);
        byte* pointer = allocator.Allocate(32, 8);
        new Span<byte>(pointer, 32).Fill(0x0A);
        Assert.True(allocator.ShrinkingReallocate(pointer, 32, 16, 8) == pointer);
        Assert.Equal(-1, new Span<byte>(pointer, 32).IndexOfAnyExcept((byte)0x0A));
        Assert.Equal(32, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Shrinking_a_64_byte_block_to_32_frees_its_upper_half()
    {
        using var allocator = Create(64);
        byte* pointer = allocator.Allocate(64, 8);
        Assert.True(IsEmpty(allocator));
        Assert.True(allocator.ShrinkingReallocate(pointer, 64, 32, 8) == pointer);
        Assert.Equal(32u, Offset(allocator, allocator.Allocate(32, 8)));
        Assert.True(IsEmpty(allocator));
        allocator.Validate();
    }

    [Fact]
    public void Growing_from_32_to_33_bytes_absorbs_the_adjacent_free_block_in_place()
    {
        using var allocator = Create(64);
        byte* pointer = allocator.Allocate(32, 8);
        Assert.Equal(0u, Offset(allocator, pointer));
        new Span<byte>(pointer, 32).Fill(0x0A);
        Assert.True(allocator.GrowingReallocate(pointer, 32, 33, 8) == pointer);
        Assert.Equal(-1, new Span<byte>(pointer, 32).IndexOfAnyExcept((byte)0x0A));
        Assert.True(IsEmpty(allocator));
        Assert.Equal(64, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Fact]
    public void A_freed_block_can_be_allocated_again()
    {
        using var allocator = Create(32);
        byte* pointer = allocator.Allocate(31, 8);
        Assert.True(IsEmpty(allocator));
        allocator.Deallocate(pointer, 31, 8);
        Assert.True(allocator.Allocate(31, 8) == pointer);
        Assert.True(IsEmpty(allocator));
    }

    // ---- Construction ----

    [Fact]
    public void Construction_carves_top_blocks_then_one_block_of_each_smaller_class()
    {
        using (var allocator = Create(96))
        {
            Assert.Equal([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], allocator.FreeBlockCounts());
            Assert.Equal(0u, Offset(allocator, allocator.Allocate(64, 64)));
            Assert.Equal(64u, Offset(allocator, allocator.Allocate(32, 32)));
        }

        using var large = new MultipleBinarySearchTreeAllocator(MiBSource, (3 * MiB) + (512 * KiB) + 100);
        int[] counts = large.FreeBlockCounts();
        Assert.Equal(16, counts.Length);
        Assert.Equal(3, counts[15]);
        Assert.Equal(1, counts[14]);
        Assert.Equal(1, counts[1]); // the 100-byte remainder: a 64-byte block, then 36 bytes
        Assert.Equal(1, counts[0]);
        Assert.Equal((long)((3 * MiB) + (512 * KiB) + 96), large.Statistics.Capacity);
        large.Validate();
    }

    [Fact]
    public void A_caller_region_that_is_not_aligned_to_the_top_class_gets_size_aligned_blocks_and_is_not_freed()
    {
        byte* buffer = (byte*)NativeMemory.AlignedAlloc(8 * KiB, 4 * KiB);
        try
        {
            using (var allocator = new MultipleBinarySearchTreeAllocator(buffer + 32, 4096, 32, 4096))
            {
                // [32, 4128) relative to the buffer: 32@32, 64@64, …, 2048@2048, then 32@4096.
                Assert.Equal([2, 1, 1, 1, 1, 1, 1, 0], allocator.FreeBlockCounts());
                Assert.Equal(4096, allocator.Statistics.Capacity);
                Assert.Equal(new MemoryRange((nuint)(buffer + 32), (nuint)(buffer + 32 + 4096)), allocator.Range);
                allocator.Validate();
                byte* all = allocator.Allocate(2048, 2048);
                Assert.True(all == buffer + 2048);
            }

            buffer[0] = 1; // still ours after Dispose
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    [Fact]
    public void Configured_size_classes_are_reported()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(PageSource, 64 * KiB, 64, 4 * KiB);
        Assert.Equal(64u, allocator.MinimumBlockSize);
        Assert.Equal(4 * KiB, allocator.MaximumBlockSize);
        Assert.Equal(7, allocator.SizeClassCount);
        Assert.Equal(16, allocator.FreeBlockCounts()[6]);
        Assert.Equal(64u, allocator.GetUsableSize(1, 1));
        Assert.Equal(8 * KiB, allocator.GetUsableSize((4 * KiB) + 1, 1));
    }

    public static TheoryData<nuint, nuint, nuint, string> BadSizes => new()
    {
        { 0, 32, MiB, "size" },
        { 31, 32, MiB, "size" },
        { 4096, 16, MiB, "minimumBlockSize" },
        { 4096, 48, MiB, "minimumBlockSize" },
        { 4096, 64, 32, "maximumBlockSize" },
        { 4096, 32, (nuint)3 << 20, "maximumBlockSize" },
        { 4096, 32, (nuint)1 << 31, "maximumBlockSize" },
    };

    [Theory]
    [MemberData(nameof(BadSizes))]
    public void Bad_constructor_arguments_throw_with_the_parameter_name(nuint size, nuint minimum, nuint maximum, string parameter)
    {
        long before = PageSource.BytesObtained;
        var fromSource = Assert.Throws<ArgumentOutOfRangeException>(() => new MultipleBinarySearchTreeAllocator(PageSource, size, minimum, maximum));
        Assert.Equal(parameter, fromSource.ParamName);
        Assert.Equal(before, PageSource.BytesObtained);

        byte* buffer = (byte*)NativeMemory.AlignedAlloc(4096, 4096);
        try
        {
            var fromRegion = Assert.Throws<ArgumentOutOfRangeException>(() => new MultipleBinarySearchTreeAllocator(buffer, size, minimum, maximum));
            Assert.Equal(parameter, fromRegion.ParamName);
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    [Fact]
    public void A_null_source_or_region_and_a_misaligned_region_are_refused()
    {
        Assert.Throws<ArgumentNullException>(() => new MultipleBinarySearchTreeAllocator((IMemorySource)null!, 4096));
        Assert.Throws<ArgumentNullException>(() => new MultipleBinarySearchTreeAllocator((byte*)null, 4096));
        byte* buffer = (byte*)NativeMemory.AlignedAlloc(4096, 4096);
        try
        {
            var misaligned = Assert.Throws<ArgumentException>(() => new MultipleBinarySearchTreeAllocator(buffer + 16, 1024));
            Assert.Equal("region", misaligned.ParamName);
            Assert.Throws<ArgumentException>(() => new MultipleBinarySearchTreeAllocator(buffer + 32, 1024, 64, 1024));
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    [Fact]
    public void Dispose_returns_the_region_to_the_source_once_and_then_owns_nothing()
    {
        var source = new NativeMemorySource();
        var allocator = new MultipleBinarySearchTreeAllocator(source, 10 * KiB);
        Assert.Equal(12 * 1024, source.BytesObtained);
        byte* pointer = allocator.Allocate(64, 8);
        allocator.Dispose();
        allocator.Dispose();
        Assert.Equal(0, source.BytesObtained);
        Assert.False(allocator.Owns(pointer));
        Assert.False(allocator.TryAllocate(64, 8, out _));
    }

    [Fact]
    public void A_source_with_a_fine_granularity_still_gives_aligned_blocks()
    {
        var source = new NativeMemorySource(granularity: 8);
        using var allocator = new MultipleBinarySearchTreeAllocator(source, 1024, 64, 1024);
        Assert.True(Allocator.IsAligned(allocator.Range.From, 64));
        Assert.Equal(1024, allocator.Statistics.Capacity);
        byte* pointer = allocator.Allocate(1, 1);
        Assert.True(Allocator.IsAligned((nuint)pointer, 64));
        allocator.Validate();
    }

    // ---- Coalescing (W-MB1, W-MB2, W-MB4) ----

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
        Assert.Equal([0, 1], allocator.FreeBlockCounts().Take(2));
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
        Assert.Equal([1, 1, 0], allocator.FreeBlockCounts().Take(3));
        Assert.True(allocator.Allocate(64, 64) == at(64));
        allocator.Deallocate(at(64), 64, 64);
        allocator.Deallocate(at(0), 32, 32);
        allocator.Flush();
        Assert.Equal([0, 0, 1], allocator.FreeBlockCounts().Take(3));
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

    // ---- Alignment (W-MB3) ----

    // W-MB3: stepping from an unaligned start by the alignment never ended when the alignment was
    // larger than the block; here the only free blocks are small and none is 4096-aligned.
    [Fact]
    public void W_MB3_allocating_32_bytes_aligned_to_4096_terminates_and_fails_when_no_block_is_aligned()
    {
        using var allocator = Create(256);
        Assert.Equal(0u, Offset(allocator, allocator.Allocate(32, 8)));
        Assert.False(allocator.TryAllocate(32, 4096, out _));
        Assert.Equal([1, 1, 1, 0], allocator.FreeBlockCounts().Take(4));
        allocator.Validate();
    }

    [Fact]
    public void W_MB3_allocating_32_bytes_aligned_to_4096_splits_an_aligned_larger_block()
    {
        using var allocator = Create(8 * KiB);
        Assert.Equal(0u, Offset(allocator, allocator.Allocate(32, 8)));
        byte* aligned = allocator.Allocate(32, 4096);
        Assert.Equal(4096u, Offset(allocator, aligned));
        Assert.Equal(64, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Theory]
    [InlineData(1u, 64u)]
    [InlineData(100u, 256u)]
    [InlineData(3000u, 1024u)]
    [InlineData(40u, 8192u)]
    public void Allocations_are_aligned_as_requested(uint size, uint alignment)
    {
        using var allocator = Create(64 * KiB);
        for (int i = 0; i < 6; i++)
        {
            byte* pointer = allocator.Allocate(size, alignment);
            Assert.True(Allocator.IsAligned((nuint)pointer, alignment));
        }

        allocator.Validate();
    }

    [Fact]
    public void An_alignment_larger_than_the_top_class_is_served_from_an_aligned_top_block()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 4 * MiB);
        byte* pointer = allocator.Allocate(32, 2 * MiB);
        Assert.True(Allocator.IsAligned((nuint)pointer, 2 * MiB));
        allocator.Validate();
        allocator.Deallocate(pointer, 32, 2 * MiB);
        allocator.Flush();
        Assert.Equal(4, allocator.FreeBlockCount(15));
    }

    // ---- Reallocation ----

    [Fact]
    public void The_type_documentation_example_runs()
    {
        using var heap = new MultipleBinarySearchTreeAllocator(NativeMemorySource.Shared, 4 << 20);
        byte* p = heap.Allocate(100, 16);
        Assert.Equal(128, heap.Statistics.BytesInUse);
        byte* grown = heap.GrowingReallocate(p, 100, 200, 16);
        Assert.True(grown == p, "the first block's buddy is free, so it grows in place");
        heap.Deallocate(grown, 200, 16);
        Assert.Equal(0, heap.Statistics.BytesInUse);
        heap.Validate();
    }

    [Fact]
    public void Growing_absorbs_successive_free_buddies_in_place()
    {
        using var allocator = Create(256);
        byte* pointer = allocator.Allocate(20, 8);
        new Span<byte>(pointer, 20).Fill(7);
        Assert.True(allocator.TryGrowInPlace(pointer, 20, 256, 8));
        Assert.True(IsEmpty(allocator));
        Assert.Equal(256, allocator.Statistics.BytesInUse);
        Assert.Equal(-1, new Span<byte>(pointer, 20).IndexOfAnyExcept((byte)7));
        allocator.Validate();
    }

    [Fact]
    public void Growing_when_the_buddy_is_taken_moves_the_block_and_keeps_its_contents()
    {
        using var allocator = Create(256);
        byte* pointer = allocator.Allocate(32, 8);
        byte* neighbour = allocator.Allocate(32, 8);
        Assert.True(neighbour == pointer + 32);
        new Span<byte>(pointer, 32).Fill(9);
        Assert.False(allocator.TryGrowInPlace(pointer, 32, 64, 8));
        byte* moved = allocator.GrowingReallocate(pointer, 32, 64, 8);
        Assert.True(moved == pointer + 64);
        Assert.Equal(-1, new Span<byte>(moved, 32).IndexOfAnyExcept((byte)9));
        Assert.Equal(96, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Fact]
    public void An_upper_buddy_never_grows_in_place_over_the_next_block()
    {
        using var allocator = Create(256);
        byte* lower = allocator.Allocate(32, 8);
        byte* upper = allocator.Allocate(32, 8);
        allocator.Deallocate(lower, 32, 8);
        // The memory above it is free, but the doubled block would start at 32: not size-aligned.
        Assert.False(allocator.TryGrowInPlace(upper, 32, 64, 8));
        allocator.Validate();
    }

    [Fact]
    public void Growing_fails_cleanly_when_there_is_no_room_and_the_block_stays_valid()
    {
        using var allocator = Create(128);
        byte* a = allocator.Allocate(64, 8);
        byte* b = allocator.Allocate(64, 8);
        new Span<byte>(a, 64).Fill(3);
        Assert.False(allocator.TryGrowingReallocate(a, 64, 65, 8, out byte* none));
        Assert.True(none == null);
        Assert.Equal(-1, new Span<byte>(a, 64).IndexOfAnyExcept((byte)3));
        allocator.Deallocate(a, 64, 8);
        allocator.Deallocate(b, 64, 8);
        allocator.Flush();
        AssertCounts(allocator, 0, 0, 1);
    }

    [Fact]
    public void Over_size_blocks_grow_in_place_into_free_top_blocks_and_shrink_back_to_small_blocks()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 4 * MiB, 32, 64 * KiB);
        byte* pointer = allocator.Allocate(64 * KiB, 64);
        Assert.True(allocator.TryGrowInPlace(pointer, 64 * KiB, 200 * KiB, 64));
        Assert.Equal((long)(256 * KiB), allocator.Statistics.BytesInUse);
        allocator.Validate();

        Assert.True(allocator.ShrinkingReallocate(pointer, 200 * KiB, 100, 64) == pointer);
        Assert.Equal(128, allocator.Statistics.BytesInUse);
        allocator.Validate();

        allocator.Deallocate(pointer, 100, 64);
        allocator.Flush();
        Assert.Equal(64, allocator.FreeBlockCount(11));
        allocator.Validate();
    }

    [Fact]
    public void Usable_size_is_the_block_size()
    {
        using var allocator = Create(4096);
        Assert.Equal(32u, allocator.GetUsableSize(1, 1));
        Assert.Equal(32u, allocator.GetUsableSize(32, 1));
        Assert.Equal(64u, allocator.GetUsableSize(33, 1));
        Assert.Equal(128u, allocator.GetUsableSize(96, 1));
        Assert.Equal(MiB, allocator.GetUsableSize(MiB, 1));
        Assert.Equal(3 * MiB, allocator.GetUsableSize((2 * MiB) + 1, 1));
        Assert.Equal(0u, allocator.GetUsableSize(0, 1));
    }

    // ---- Bad input ----

    [Fact]
    public void Free_of_a_foreign_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* pointer = allocator.Allocate(64, 8);
        var counts = allocator.FreeBlockCounts();
        var statistics = allocator.Statistics;
        byte* foreign = (byte*)NativeMemory.AlignedAlloc(64, 64);
        try
        {
            Assert.Throws<ArgumentException>(() => allocator.Deallocate(foreign, 64, 8));
            Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)(allocator.Range.To), 32, 8));
            Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)(allocator.Range.From - 32), 32, 8));
            Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)(allocator.Range.To - 32), 64, 8)); // runs past the end
            Assert.Throws<ArgumentException>(() => allocator.TryGrowInPlace(foreign, 64, 128, 8));
            Assert.Throws<ArgumentException>(() => allocator.ShrinkingReallocate(foreign, 64, 32, 8));
        }
        finally
        {
            NativeMemory.AlignedFree(foreign);
        }

        Assert.Equal(counts, allocator.FreeBlockCounts());
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Deallocate(pointer, 64, 8);
        allocator.Validate();
    }

    [Fact]
    public void Free_of_a_misaligned_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* pointer = allocator.Allocate(64, 64);
        var counts = allocator.FreeBlockCounts();
        var statistics = allocator.Statistics;
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer + 8, 32, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer + 32, 32, 64)); // not aligned to the alignment given
        Assert.Equal(counts, allocator.FreeBlockCounts());
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Validate();
    }

    [Fact]
    public void Free_with_a_larger_size_class_than_the_block_is_refused_when_the_pointer_is_not_aligned_to_it()
    {
        using var allocator = Create(4096);
        byte* lower = allocator.Allocate(32, 8);
        byte* upper = allocator.Allocate(32, 8);
        Assert.True(upper == lower + 32);
        var counts = allocator.FreeBlockCounts();
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(upper, 64, 8));
        Assert.Throws<ArgumentException>(() => allocator.TryGrowInPlace(upper, 64, 128, 8));
        Assert.Equal(counts, allocator.FreeBlockCounts());
        Assert.Equal(64, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Fact]
    public void Double_free_throws_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* kept = allocator.Allocate(64, 8);
        byte* freed = allocator.Allocate(64, 8);
        Assert.True(freed == kept + 64);
        allocator.Deallocate(freed, 64, 8); // its buddy is live, so it stays a 64-byte block
        var counts = allocator.FreeBlockCounts();
        var statistics = allocator.Statistics;
        var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(freed, 64, 8));
        Assert.Contains("double free", error.Message, StringComparison.Ordinal);
        Assert.Equal(counts, allocator.FreeBlockCounts());
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Validate();
    }

    [Fact]
    public void Double_free_of_an_over_size_block_throws_and_changes_nothing()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 4 * MiB, 32, 64 * KiB);
        byte* keep = allocator.Allocate(64 * KiB, 8);
        byte* pointer = allocator.Allocate(128 * KiB, 8);
        allocator.Deallocate(pointer, 128 * KiB, 8);
        var counts = allocator.FreeBlockCounts();
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 128 * KiB, 8));
        Assert.Equal(counts, allocator.FreeBlockCounts());
        allocator.Deallocate(keep, 64 * KiB, 8);
        allocator.Validate();
    }

    [Fact]
    public void Zero_size_requests_return_the_sentinel_and_touch_nothing()
    {
        using var allocator = Create(256);
        var counts = allocator.FreeBlockCounts();
        Assert.True(allocator.Allocate(0, 64) == Allocator.ZeroSizeSentinel);
        allocator.Deallocate(Allocator.ZeroSizeSentinel, 0, 64);
        Assert.Equal(counts, allocator.FreeBlockCounts());
        Assert.Equal(0, allocator.Statistics.AllocationCount);
        Assert.Equal(0u, allocator.GetUsableSize(0, 8));
    }

    // ---- Deferred coalescing: the per-class caches ----

    [Fact]
    public void Alloc_free_ping_pong_reuses_the_cached_block_without_touching_the_trees()
    {
        using var allocator = Create(64 * KiB);
        byte* first = allocator.Allocate(64, 8);
        allocator.Deallocate(first, 64, 8);
        int[] trees = allocator.FreeBlockCounts();
        Assert.Equal(1, allocator.CachedBlockCount(1));
        for (int i = 0; i < 100; i++)
        {
            byte* pointer = allocator.Allocate(64, 8);
            Assert.True(pointer == first);
            Assert.Equal(0, allocator.CachedBlockCount(1));
            Assert.Equal(64, allocator.Statistics.BytesInUse);
            allocator.Deallocate(pointer, 64, 8);
            Assert.Equal(trees, allocator.FreeBlockCounts());
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
            int limit = allocator.CacheLimit(k);
            Assert.InRange(limit, 1, MultipleBinarySearchTreeAllocator.MaximumCachedBlocksPerClass);
            nuint blockSize = allocator.MinimumBlockSize << k;
            Assert.True((nuint)limit * blockSize <= Math.Max(256 * KiB, blockSize), $"class {k} caches {limit} blocks");
        }

        Assert.Equal(MultipleBinarySearchTreeAllocator.MaximumCachedBlocksPerClass, allocator.CacheLimit(0));
        Assert.Equal(1, allocator.CacheLimit(15));

        // A small region caches little: at most 1/32 of its capacity per class, but one block always.
        using var small = Create(4 * KiB);
        Assert.Equal(4, small.CacheLimit(0));
        Assert.Equal(1, small.CacheLimit(7));
    }

    [Fact]
    public void Frees_beyond_the_cache_limit_coalesce_into_the_trees()
    {
        using var allocator = Create(64 * KiB);
        int[] initial = allocator.FreeBlockCounts();
        int limit = allocator.CacheLimit(0);
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
        Assert.Equal(initial, allocator.FreeBlockCounts());
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

        Assert.Equal(allocator.CacheLimit(0), allocator.CachedBlockCount(0));
        Assert.True(allocator.CacheLimit(0) > 0);
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
        int[] trees = allocator.FreeBlockCounts();
        var statistics = allocator.Statistics;

        var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(a, 64, 8));
        Assert.Contains("double free", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(b, 64, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(b, 33, 64));

        Assert.Equal(2, allocator.CachedBlockCount(1));
        Assert.Equal(trees, allocator.FreeBlockCounts());
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
        int[] initial = allocator.FreeBlockCounts();
        foreach (nuint size in new nuint[] { 32, 64, 1000, 4096, 32 })
        {
            allocator.Deallocate(allocator.Allocate(size, 8), size, 8);
        }

        Assert.Equal(1, allocator.CachedBlockCount(0));
        allocator.Reset();
        Assert.All(Enumerable.Range(0, allocator.SizeClassCount), k => Assert.Equal(0, allocator.CachedBlockCount(k)));
        Assert.Equal(initial, allocator.FreeBlockCounts());
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
        Assert.True(allocator.CachedBlock(1) == b);
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

    // ---- Statistics ----

    [Fact]
    public void Statistics_count_block_sizes_and_the_carved_capacity()
    {
        using var allocator = Create(4010);
        Assert.Equal(4000, allocator.Statistics.Capacity); // rounded down to whole 32-byte blocks
        byte* a = allocator.Allocate(100, 8);
        byte* b = allocator.Allocate(1, 1);
        var statistics = allocator.Statistics;
        Assert.Equal(160, statistics.BytesInUse);
        Assert.Equal(160, statistics.PeakBytesInUse);
        Assert.Equal(2, statistics.AllocationCount);
        Assert.Equal(101, statistics.TotalBytesAllocated);

        a = allocator.ShrinkingReallocate(a, 100, 60, 8);
        Assert.Equal(96, allocator.Statistics.BytesInUse);
        allocator.Deallocate(a, 60, 8);
        allocator.Deallocate(b, 1, 1);
        statistics = allocator.Statistics;
        Assert.Equal(0, statistics.BytesInUse);
        Assert.Equal(160, statistics.PeakBytesInUse);
        Assert.Equal(2, statistics.DeallocationCount);
        Assert.False(allocator.TryAllocate(8192, 8, out _));
        Assert.Equal(1, allocator.Statistics.FailureCount);
        allocator.Validate();
    }

    [Fact]
    public void Owns_tests_the_region()
    {
        using var allocator = Create(4096);
        MemoryRange range = allocator.Range;
        Assert.Equal(4096u, range.Length);
        Assert.True(allocator.Owns((byte*)range.From));
        Assert.True(allocator.Owns((byte*)(range.To - 1)));
        Assert.False(allocator.Owns((byte*)range.To));
        Assert.False(allocator.Owns((byte*)(range.From - 1)));
    }

    // ---- Property tests ----

    // Model: AllocatorModel's list of live blocks (no overlap, alignment, contents preserved); in
    // addition every red-black tree and the allocator's own invariants (size-aligned, unmerged
    // buddies, valid caches, free + in use = capacity) are checked after every step, and freeing
    // everything then flushing the caches must give back exactly the initial carving. The region
    // starts `offset` bytes into a 4 KiB-aligned buffer, so a non-zero offset also exercises edge
    // blocks whose buddies lie outside the region.
    [Theory]
    [InlineData(0)]
    [InlineData(96)]
    public void Random_operations_keep_every_tree_valid_after_every_step(int offset)
    {
        var settings = new ModelSettings { MaxSize = 6000, MaxAlignmentLog2 = 12, MaxSteps = 150, Iterations = 50 };
        nuint size = (48 * KiB) + 96;
        byte* buffer = (byte*)NativeMemory.AlignedAlloc(size + (nuint)offset, 4096);
        try
        {
            long executed = 0;
            AllocatorModel.Steps(settings).Array[settings.MinSteps, settings.MaxSteps].Sample(
                steps =>
                {
                    using var allocator = new MultipleBinarySearchTreeAllocator(buffer + offset, size, 32, 4 * KiB);
                    int[] initial = allocator.FreeBlockCounts();
                    var runner = new AllocatorModel.Runner(allocator);
                    foreach (var step in steps)
                    {
                        runner.Apply(step, null);
                        runner.CheckInvariants();
                        allocator.Validate();
                    }

                    runner.FreeAll();
                    allocator.Validate();
                    Assert.Equal(0, allocator.Statistics.BytesInUse);
                    allocator.Flush();
                    allocator.Validate();
                    Assert.Equal(initial, allocator.FreeBlockCounts());
                    executed += steps.Length;
                },
                iter: settings.Iterations,
                threads: 1);
            Assert.True(executed >= 2000, $"only {executed} steps ran");
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    // Model: AllocatorModel's list of live blocks; after freeing everything and flushing the caches
    // the allocator must be back to its initial carving (four 64 KiB blocks) and a top-class
    // allocation must succeed.
    [Fact]
    public void Model_based_random_operations_and_freeing_everything_restores_the_initial_carving()
    {
        var source = new NativeMemorySource(64 * KiB);
        var settings = new ModelSettings { MaxSize = 8 * 1024, MaxAlignmentLog2 = 13, MaxSteps = 200, Iterations = 80 };
        long executed = AllocatorModel.Run(
            settings,
            () => new MultipleBinarySearchTreeAllocator(source, 256 * KiB, 32, 64 * KiB),
            afterAllFreed: allocator =>
            {
                allocator.Validate();
                allocator.Flush();
                Assert.Equal([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4], allocator.FreeBlockCounts());
                allocator.Validate();
                byte* top = allocator.Allocate(64 * KiB, 64 * KiB);
                allocator.Deallocate(top, 64 * KiB, 64 * KiB);
            });
        Assert.True(executed >= 4000, $"only {executed} steps ran");
    }

    // Model: as above, with a 4 KiB top class so that most large requests and grows are over-size
    // (runs of contiguous top-class blocks).
    [Fact]
    public void Model_based_random_operations_with_over_size_requests_restore_the_initial_carving()
    {
        var settings = new ModelSettings { MaxSize = 8 * 1024, MaxAlignmentLog2 = 12, MaxSteps = 200, Iterations = 80 };
        long executed = AllocatorModel.Run(
            settings,
            () => new MultipleBinarySearchTreeAllocator(PageSource, 256 * KiB, 32, 4 * KiB),
            afterAllFreed: allocator =>
            {
                allocator.Validate();
                allocator.Flush();
                Assert.Equal([0, 0, 0, 0, 0, 0, 0, 64], allocator.FreeBlockCounts());
                allocator.Validate();
                byte* all = allocator.Allocate(256 * KiB, 4096);
                allocator.Deallocate(all, 256 * KiB, 4096);
            });
        Assert.True(executed >= 4000, $"only {executed} steps ran");
    }

    // Model: a list of live blocks and a list of freed blocks that no allocation has overlapped
    // since their free. Freeing one of the latter again must throw and change nothing, whether the
    // block is cached, in its tree, or merged into a larger free block, with flushes in between.
    [Fact]
    public void Random_double_frees_of_blocks_not_reused_since_are_always_detected()
    {
        long doubleFrees = 0;
        Gen.Select(Gen.Int[0, 9], Gen.Int[1, 3000], Gen.Int[0, 1 << 20]).Array[20, 80].Sample(
            operations =>
            {
                using var allocator = Create(64 * KiB);
                var live = new List<(nuint Address, nuint Size)>();
                var freed = new List<(nuint Address, nuint Size)>();
                foreach (var (kind, size, pick) in operations)
                {
                    if (kind < 4 || live.Count == 0)
                    {
                        if (allocator.TryAllocate((nuint)size, 8, out byte* pointer))
                        {
                            nuint start = (nuint)pointer;
                            nuint end = start + allocator.GetUsableSize((nuint)size, 8);
                            freed.RemoveAll(f => f.Address < end && start < f.Address + allocator.GetUsableSize(f.Size, 8));
                            new Span<byte>(pointer, size).Fill(0xA5); // overwrite any stale stamp
                            live.Add((start, (nuint)size));
                        }
                    }
                    else if (kind < 7)
                    {
                        int index = pick % live.Count;
                        allocator.Deallocate((byte*)live[index].Address, live[index].Size, 8);
                        freed.Add(live[index]);
                        live.RemoveAt(index);
                    }
                    else if (kind == 7)
                    {
                        // Growing in place takes free neighbours (from trees or caches): no longer free.
                        int index = pick % live.Count;
                        var (address, current) = live[index];
                        nuint grown = current + (nuint)size;
                        if (allocator.TryGrowInPlace((byte*)address, current, grown, 8))
                        {
                            nuint end = address + allocator.GetUsableSize(grown, 8);
                            freed.RemoveAll(f => f.Address < end && address < f.Address + allocator.GetUsableSize(f.Size, 8));
                            new Span<byte>((byte*)address, (int)grown).Fill(0xA5);
                            live[index] = (address, grown);
                        }
                    }
                    else if (kind == 9 && (pick & 1) == 0)
                    {
                        // Shrinking in place frees the tail (not tracked as a freed block).
                        int index = pick % live.Count;
                        var (address, current) = live[index];
                        nuint shrunk = Math.Max(1, current / 3);
                        Assert.True(allocator.TryShrinkInPlace((byte*)address, current, shrunk, 8));
                        live[index] = (address, shrunk);
                    }
                    else if (kind == 8 && freed.Count != 0)
                    {
                        var (address, blockSize) = freed[pick % freed.Count];
                        int[] trees = allocator.FreeBlockCounts();
                        int[] cached = [.. Enumerable.Range(0, allocator.SizeClassCount).Select(allocator.CachedBlockCount)];
                        var statistics = allocator.Statistics;
                        Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)address, blockSize, 8));
                        Assert.Equal(trees, allocator.FreeBlockCounts());
                        Assert.Equal(cached, Enumerable.Range(0, allocator.SizeClassCount).Select(allocator.CachedBlockCount));
                        Assert.Equal(statistics, allocator.Statistics);
                        doubleFrees++;
                    }
                    else
                    {
                        allocator.Flush();
                    }

                    allocator.Validate();
                }
            },
            iter: 100,
            threads: 1);
        Assert.True(doubleFrees >= 200, $"only {doubleFrees} double frees were tried");
    }

    // The free block counts of the lowest classes are as given and every other class is empty.
    private static void AssertCounts(MultipleBinarySearchTreeAllocator allocator, params int[] lowest)
    {
        int[] counts = allocator.FreeBlockCounts();
        Assert.Equal(lowest, counts.Take(lowest.Length));
        Assert.All(counts.Skip(lowest.Length), count => Assert.Equal(0, count));
    }

    private static IEnumerable<int[]> Permutations(int[] items)
    {
        if (items.Length <= 1)
        {
            yield return items;
            yield break;
        }

        for (int i = 0; i < items.Length; i++)
        {
            int[] rest = [.. items.Take(i), .. items.Skip(i + 1)];
            foreach (int[] tail in Permutations(rest))
            {
                yield return [items[i], .. tail];
            }
        }
    }
}
