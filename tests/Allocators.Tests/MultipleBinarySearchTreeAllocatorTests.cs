using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using static AllocHosting.Allocators.Tests.TreeAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

public unsafe class MultipleBinarySearchTreeAllocatorTests
{
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
            Assert.Equal([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], FreeBlockCounts(allocator));
            Assert.Equal(0u, Offset(allocator, allocator.Allocate(64, 64)));
            Assert.Equal(64u, Offset(allocator, allocator.Allocate(32, 32)));
        }

        using var large = new MultipleBinarySearchTreeAllocator(MiBSource, (3 * MiB) + (512 * KiB) + 100);
        int[] counts = FreeBlockCounts(large);
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
                Assert.Equal([2, 1, 1, 1, 1, 1, 1, 0], FreeBlockCounts(allocator));
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
        Assert.Equal(16, FreeBlockCounts(allocator)[6]);
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
        Assert.Throws<ObjectDisposedException>(() => allocator.TryAllocate(64, 8, out _));   // disposal is misuse, not exhaustion
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

    // ---- Alignment (W-MB3) ----

    // W-MB3: stepping from an unaligned start by the alignment never ended when the alignment was
    // larger than the block; here the only free blocks are small and none is 4096-aligned.
    [Fact]
    public void W_MB3_allocating_32_bytes_aligned_to_4096_terminates_and_fails_when_no_block_is_aligned()
    {
        using var allocator = Create(256);
        Assert.Equal(0u, Offset(allocator, allocator.Allocate(32, 8)));
        Assert.False(allocator.TryAllocate(32, 4096, out _));
        Assert.Equal([1, 1, 1, 0], FreeBlockCounts(allocator).Take(4));
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
    public void Size_class_diagnostics_refuse_a_class_out_of_range()
    {
        using var allocator = Create(4 * KiB);
        foreach (int sizeClass in new[] { -1, allocator.SizeClassCount })
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => allocator.FreeBlockCount(sizeClass));
            Assert.Throws<ArgumentOutOfRangeException>(() => allocator.CachedBlockCount(sizeClass));
            Assert.Throws<ArgumentOutOfRangeException>(() => allocator.CachedBlockLimit(sizeClass));
        }
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
}
