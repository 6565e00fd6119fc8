using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

public unsafe class BumpAllocatorTests
{
    private const nuint Capacity = 4096;

    private static BumpAllocator Create(nuint capacity = Capacity) => new(NativeMemorySource.Shared, capacity);

    private static nuint Offset(BumpAllocator allocator, byte* pointer) => (nuint)pointer - allocator.Range.From;

    [Fact]
    public void Alignment_rounding_places_one_byte_then_an_aligned_word_at_offsets_0_and_8()
    {
        using var allocator = Create();

        byte* first = allocator.Allocate(1, 1);
        byte* second = allocator.Allocate(8, 8);

        Assert.Equal((nuint)0, Offset(allocator, first));
        Assert.Equal((nuint)8, Offset(allocator, second));
        Assert.Equal((nuint)16, allocator.Used);
    }

    [Fact]
    public void Exact_fit_at_the_end_succeeds_and_one_more_byte_fails()
    {
        using var allocator = Create();
        allocator.Allocate(100, 1);

        Assert.True(allocator.TryAllocate(Capacity - 100, 1, out byte* last));
        Assert.Equal((nuint)100, Offset(allocator, last));
        Assert.Equal((nuint)0, allocator.Remaining);
        Assert.False(allocator.TryAllocate(1, 1, out byte* none));
        Assert.True(none == null);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(1, 1));
    }

    [Fact]
    public void One_byte_more_than_the_capacity_fails_on_a_fresh_allocator()
    {
        using var allocator = Create();

        Assert.False(allocator.TryAllocate(Capacity + 1, 1, out _));
        Assert.True(allocator.TryAllocate(Capacity, 1, out _));
    }

    [Fact]
    public void Free_of_the_most_recent_block_rewinds_including_its_padding()
    {
        using var allocator = Create();
        allocator.Allocate(3, 1);
        byte* recent = allocator.Allocate(64, 64);
        Assert.Equal((nuint)128, allocator.Used);

        allocator.Deallocate(recent, 64, 64);

        Assert.Equal((nuint)3, allocator.Used);
        Assert.True(allocator.Allocate(64, 64) == recent);
    }

    [Fact]
    public void Free_of_an_older_block_changes_nothing()
    {
        using var allocator = Create();
        byte* older = allocator.Allocate(32, 8);
        byte* recent = allocator.Allocate(32, 8);

        allocator.Deallocate(older, 32, 8);

        Assert.Equal((nuint)64, allocator.Used);
        Assert.True(allocator.TryGrowInPlace(recent, 32, 48, 8), "the most recent block is still the most recent");
        Assert.Equal((nuint)80, allocator.Used);
    }

    [Fact]
    public void Growing_the_most_recent_block_stays_in_place()
    {
        using var allocator = Create();
        allocator.Allocate(16, 8);
        byte* recent = allocator.Allocate(16, 8);
        new Span<byte>(recent, 16).Fill(0xAB);

        byte* grown = allocator.GrowingReallocate(recent, 16, 1000, 8);

        Assert.True(grown == recent);
        Assert.Equal((nuint)(16 + 1000), allocator.Used);
        Assert.True(new ReadOnlySpan<byte>(grown, 16).IndexOfAnyExcept((byte)0xAB) < 0);
    }

    [Fact]
    public void Growing_the_most_recent_block_past_the_end_fails_and_keeps_it()
    {
        using var allocator = Create();
        byte* recent = allocator.Allocate(16, 8);

        Assert.False(allocator.TryGrowInPlace(recent, 16, Capacity + 1, 8));
        Assert.False(allocator.TryGrowingReallocate(recent, 16, Capacity + 1, 8, out _));
        Assert.Equal((nuint)16, allocator.Used);
        Assert.True(allocator.TryGrowInPlace(recent, 16, Capacity, 8), "exact fit by growing");
        Assert.Equal(Capacity, allocator.Used);
    }

    [Fact]
    public void Growing_an_older_block_copies_and_its_space_is_not_reclaimed()
    {
        using var allocator = Create();
        byte* older = allocator.Allocate(16, 8);
        new Span<byte>(older, 16).Fill(0x5A);
        allocator.Allocate(16, 8);

        Assert.False(allocator.TryGrowInPlace(older, 16, 32, 8));
        byte* moved = allocator.GrowingReallocate(older, 16, 32, 8);

        Assert.True(moved != older);
        Assert.Equal((nuint)32, Offset(allocator, moved));
        Assert.True(new ReadOnlySpan<byte>(moved, 16).IndexOfAnyExcept((byte)0x5A) < 0);
        Assert.Equal((nuint)64, allocator.Used);
    }

    [Fact]
    public void Shrinking_always_stays_in_place_and_only_the_most_recent_gives_space_back()
    {
        using var allocator = Create();
        byte* older = allocator.Allocate(64, 8);
        byte* recent = allocator.Allocate(64, 8);

        Assert.True(allocator.ShrinkingReallocate(older, 64, 8, 8) == older);
        Assert.Equal((nuint)128, allocator.Used);
        Assert.True(allocator.ShrinkingReallocate(recent, 64, 8, 8) == recent);
        Assert.Equal((nuint)72, allocator.Used);
        Assert.True(allocator.TryShrinkInPlace(recent, 8, 1, 8));
        Assert.Equal((nuint)65, allocator.Used);
    }

    [Fact]
    public void W_BU1_a_failed_allocation_does_not_disturb_the_most_recent_block()
    {
        using var allocator = Create();
        allocator.Allocate(8, 8);
        byte* recent = allocator.Allocate(8, 8);

        Assert.False(allocator.TryAllocate(Capacity, 64, out _));
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(Capacity, 1));

        Assert.True(allocator.TryGrowInPlace(recent, 8, 24, 8), "the most recent block can still grow in place");
        allocator.Deallocate(recent, 24, 8);
        Assert.Equal((nuint)8, allocator.Used);
    }

    [Fact]
    public void Reset_releases_everything_in_constant_time_and_the_whole_capacity_is_available()
    {
        using var allocator = Create();
        byte* first = allocator.Allocate(100, 8);
        allocator.Allocate(200, 16);

        allocator.Reset();

        Assert.Equal((nuint)0, allocator.Used);
        Assert.Equal(Capacity, allocator.Remaining);
        Assert.True(allocator.Allocate(Capacity, 1) == first);
    }

    [Fact]
    public void High_water_remembers_freed_most_recent_blocks_until_reset()
    {
        using var allocator = Create();
        allocator.Allocate(100, 1);
        byte* recent = allocator.Allocate(300, 1);
        allocator.Deallocate(recent, 300, 1);

        Assert.Equal((nuint)100, allocator.Used);
        Assert.Equal((nuint)400, allocator.HighWater);

        allocator.Reset();
        Assert.Equal((nuint)0, allocator.HighWater);
        allocator.Allocate(50, 1);
        Assert.Equal((nuint)50, allocator.HighWater);
        Assert.Equal(400, allocator.Statistics.PeakBytesInUse);
    }

    [Fact]
    public void Reset_with_clear_zeroes_every_byte_written_since_the_last_reset()
    {
        using var allocator = Create();
        byte* older = allocator.Allocate(100, 1);
        byte* recent = allocator.Allocate(300, 1);
        new Span<byte>(older, 400).Fill(0xEE);
        allocator.Deallocate(recent, 300, 1);
        byte* untouched = older + 400;
        *untouched = 0x11;

        allocator.Reset(clear: true);

        Assert.True(new ReadOnlySpan<byte>(older, 400).IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal(0x11, *untouched);
        Assert.Equal((nuint)0, allocator.Used);
    }

    [Fact]
    public void Reset_forgets_the_most_recent_block()
    {
        using var allocator = Create();
        byte* block = allocator.Allocate(100, 8);
        allocator.Reset();

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 100, 8));
        Assert.Throws<ArgumentException>(() => allocator.TryGrowInPlace(block, 100, 200, 8));
        Assert.Equal((nuint)0, allocator.Used);
    }

    [Fact]
    public void Free_of_foreign_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create();
        byte* block = allocator.Allocate(32, 8);
        byte* foreign = (byte*)allocator.Range.From - 64;
        var before = allocator.Statistics;

        var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(foreign, 1, 1));
        Assert.Equal("pointer", error.ParamName);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)allocator.Range.To, 1, 1));

        Assert.Equal(before, allocator.Statistics);
        Assert.Equal((nuint)32, allocator.Used);
        allocator.Deallocate(block, 32, 8);
        Assert.Equal((nuint)0, allocator.Used);
    }

    [Fact]
    public void Free_of_a_pointer_never_handed_out_throws_and_changes_nothing()
    {
        using var allocator = Create();
        byte* block = allocator.Allocate(32, 8);

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block + 32, 8, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 33, 8));
        Assert.Throws<ArgumentException>(() => allocator.TryGrowInPlace(block + 64, 8, 16, 8));

        Assert.Equal((nuint)32, allocator.Used);
        Assert.True(allocator.TryGrowInPlace(block, 32, 40, 8));
    }

    [Fact]
    public void Second_free_of_the_most_recent_block_is_detected()
    {
        using var allocator = Create();
        allocator.Allocate(16, 8);
        byte* recent = allocator.Allocate(16, 8);
        allocator.Deallocate(recent, 16, 8);

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(recent, 16, 8));
        Assert.Equal((nuint)16, allocator.Used);
    }

    [Fact]
    public void Huge_size_fails_cleanly_without_wrap_around()
    {
        using var allocator = Create();
        byte* block = allocator.Allocate(8, 8);

        Assert.False(allocator.TryAllocate(Allocator.MaximumSize, 1, out _));
        Assert.False(allocator.TryAllocate(Allocator.MaximumSize, Allocator.MaximumAlignment, out _));
        Assert.False(allocator.TryAllocate(1, Allocator.MaximumAlignment, out _), "a 1 GiB alignment cannot be met inside a 4 KiB region");
        Assert.False(allocator.TryGrowInPlace(block, 8, Allocator.MaximumSize, 8));
        Assert.False(allocator.TryGrowingReallocate(block, 8, Allocator.MaximumSize, 8, out _));
        Assert.False(allocator.TryAllocateConcurrent(Allocator.MaximumSize, 8, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.Allocate(nuint.MaxValue, 1));

        Assert.Equal((nuint)8, allocator.Used);
        Assert.True(allocator.TryGrowInPlace(block, 8, 16, 8));
    }

    [Fact]
    public void Zero_size_returns_the_sentinel_and_takes_nothing()
    {
        using var allocator = Create();
        byte* recent = allocator.Allocate(8, 8);

        byte* empty = allocator.Allocate(0, 64);
        Assert.True(empty == Allocator.ZeroSizeSentinel);
        Assert.True(allocator.AllocateConcurrent(0, 8) == Allocator.ZeroSizeSentinel);
        allocator.Deallocate(empty, 0, 64);

        Assert.Equal((nuint)8, allocator.Used);
        Assert.True(allocator.TryGrowInPlace(recent, 8, 16, 8), "a zero-size request does not become the most recent block");
    }

    [Fact]
    public void Statistics_count_allocations_frees_failures_and_the_peak()
    {
        using var allocator = Create();
        byte* a = allocator.Allocate(100, 1);
        byte* b = allocator.Allocate(28, 4);
        allocator.TryAllocate(Capacity, 1, out _);
        allocator.Deallocate(b, 28, 4);
        allocator.Deallocate(a, 100, 1);

        var statistics = allocator.Statistics;
        Assert.Equal(100, statistics.BytesInUse);
        Assert.Equal(128, statistics.PeakBytesInUse);
        Assert.Equal((long)Capacity, statistics.Capacity);
        Assert.Equal(2, statistics.AllocationCount);
        Assert.Equal(2, statistics.DeallocationCount);
        Assert.Equal(1, statistics.FailureCount);
        Assert.Equal(128, statistics.TotalBytesAllocated);

        allocator.Reset();
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(128, allocator.Statistics.PeakBytesInUse);
    }

    [Fact]
    public void Range_is_the_whole_region_and_Owns_tests_it()
    {
        using var allocator = Create();
        var range = allocator.Range;

        Assert.Equal(Capacity, range.Length);
        Assert.Equal(Capacity, allocator.Capacity);
        Assert.True(allocator.Owns((byte*)range.From));
        Assert.True(allocator.Owns((byte*)range.To - 1));
        Assert.False(allocator.Owns((byte*)range.To));
        Assert.False(allocator.Owns((byte*)range.From - 1));
    }

    [Fact]
    public void Caller_provided_region_is_used_and_never_released()
    {
        const nuint size = 256;
        byte* region = (byte*)NativeMemory.AlignedAlloc(size, 64);
        try
        {
            using (var allocator = new BumpAllocator(region, size))
            {
                Assert.Equal(new MemoryRange((nuint)region, (nuint)region + size), allocator.Range);
                Assert.True(allocator.Allocate(size, 64) == region);
            }

            // Still ours after the allocator was disposed.
            new Span<byte>(region, (int)size).Fill(1);
        }
        finally
        {
            NativeMemory.AlignedFree(region);
        }
    }

    [Fact]
    public void Region_from_a_source_is_released_once_on_dispose()
    {
        var source = new NativeMemorySource();
        var allocator = new BumpAllocator(source, 10_000);
        Assert.Equal(12_288, source.BytesObtained);

        allocator.Dispose();
        allocator.Dispose();

        Assert.Equal(0, source.BytesObtained);
        Assert.Throws<ObjectDisposedException>(() => allocator.Allocate(8, 8));
        Assert.False(allocator.Owns((byte*)4096));
    }

    [Fact]
    public void Constructors_reject_bad_arguments()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new BumpAllocator(NativeMemorySource.Shared, 0));
        Assert.Throws<ArgumentNullException>(() => new BumpAllocator((IMemorySource)null!, 64));
        Assert.Throws<ArgumentNullException>(() => new BumpAllocator((byte*)null, 64));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BumpAllocator((byte*)4096, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BumpAllocator((byte*)(nuint.MaxValue - 15), 64));
    }

    [Fact]
    public void Concurrent_allocation_rejects_bad_arguments_and_changes_nothing()
    {
        using var allocator = Create();
        byte* block = allocator.Allocate(8, 8);

        Assert.Throws<ArgumentException>(() => allocator.TryAllocateConcurrent(8, 3, out _));
        Assert.Throws<ArgumentException>(() => allocator.AllocateConcurrent(8, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.TryAllocateConcurrent(Allocator.MaximumSize + 1, 8, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.AllocateConcurrent(Allocator.MaximumSize + 1, 8));

        Assert.Equal((nuint)8, allocator.Used);
        Assert.True(allocator.TryGrowInPlace(block, 8, 16, 8), "a rejected request must not forget the most recent block");
    }

    [Fact]
    public void Concurrent_allocation_when_full_throws_exhausted_and_changes_nothing()
    {
        using var allocator = Create();
        byte* all = allocator.AllocateConcurrent(Capacity, 8);
        Assert.True(all != null);

        var exception = Assert.Throws<AllocatorExhaustedException>(() => allocator.AllocateConcurrent(1, 1));
        Assert.Equal(1UL, exception.RequestedSize);
        Assert.False(allocator.TryAllocateConcurrent(1, 1, out byte* none));
        Assert.True(none == null);
        Assert.Equal(Capacity, allocator.Used);
        Assert.Equal((nuint)0, allocator.Remaining);
    }

    [Fact]
    public void Concurrent_allocation_after_dispose_throws_object_disposed()
    {
        var allocator = Create();
        allocator.Dispose();

        Assert.Throws<ObjectDisposedException>(() => allocator.TryAllocateConcurrent(8, 8, out _));
        Assert.Throws<ObjectDisposedException>(() => allocator.AllocateConcurrent(8, 8));
    }

    [Fact]
    public void Concurrent_allocation_forgets_the_most_recent_block()
    {
        using var allocator = Create();
        byte* single = allocator.Allocate(16, 8);
        byte* concurrent = allocator.AllocateConcurrent(16, 8);

        allocator.Deallocate(single, 16, 8);
        allocator.Deallocate(concurrent, 16, 8);

        Assert.Equal((nuint)32, allocator.Used);
        Assert.False(allocator.TryGrowInPlace(single, 16, 24, 8));
        Assert.True(allocator.Allocate(8, 8) == concurrent + 16);
    }

    [Fact]
    public void Concurrent_allocation_from_four_threads_hands_out_disjoint_aligned_blocks_and_loses_no_bytes()
    {
        const int threads = 4;
        const nuint capacity = 256 * 1024;
        using var allocator = new BumpAllocator(NativeMemorySource.Shared, capacity);
        var blocks = new List<(nuint Address, nuint Size, nuint Alignment, byte Fill)>[threads];
        using var start = new Barrier(threads);

        var workers = Enumerable.Range(0, threads).Select(id => new Thread(() =>
        {
            var mine = new List<(nuint, nuint, nuint, byte)>();
            var random = new Random(id);
            start.SignalAndWait();
            for (int sequence = 0; sequence < 100_000; sequence++)
            {
                nuint size = (nuint)random.Next(1, 600);
                nuint alignment = (nuint)1 << random.Next(0, 7);
                if (!allocator.TryAllocateConcurrent(size, alignment, out byte* pointer))
                {
                    break;
                }

                byte fill = (byte)((id << 6) ^ sequence);
                new Span<byte>(pointer, (int)size).Fill(fill);
                mine.Add(((nuint)pointer, size, alignment, fill));
            }

            blocks[id] = mine;
        })).ToArray();
        foreach (var worker in workers)
        {
            worker.Start();
        }

        foreach (var worker in workers)
        {
            worker.Join();
        }

        var all = blocks.SelectMany(b => b).OrderBy(b => b.Address).ToList();
        nuint cursor = allocator.Range.From;
        nuint requested = 0;
        foreach (var (address, size, alignment, fill) in all)
        {
            Assert.True(Allocator.IsAligned(address, alignment), $"block at 0x{address:X} is aligned to {alignment}");
            Assert.True(address >= cursor, "blocks do not overlap");
            Assert.True(address - cursor < alignment, "the gap before a block is only its alignment padding");
            Assert.True(new ReadOnlySpan<byte>((void*)address, (int)size).IndexOfAnyExcept(fill) < 0, "the block's contents are intact");
            cursor = address + size;
            requested += size;
        }

        Assert.Equal(cursor - allocator.Range.From, allocator.Used);
        Assert.True(allocator.Used <= capacity);
        Assert.True(allocator.Remaining < 600 + 64, "every thread stopped because the region was full");
        var statistics = allocator.Statistics;
        Assert.Equal(all.Count, statistics.AllocationCount);
        Assert.Equal((long)requested, statistics.TotalBytesAllocated);
        Assert.Equal(threads, statistics.FailureCount);
        Assert.Equal((long)allocator.Used, statistics.BytesInUse);
    }

    [Fact]
    public void Concurrent_counts_stay_exact_past_the_limits_of_their_packed_counter()
    {
        // The concurrent path counts allocations and bytes in one packed word, moved into the plain
        // counters at 2^22 allocations or 2^39 bytes. A bump allocator never touches its region
        // while allocating, so an untouched 8 TiB address range tests the byte limit without memory.
        if (!Environment.Is64BitProcess)
        {
            return;   // needs 64-bit addresses (every platform CI runs on has them)
        }

        using var allocator = new BumpAllocator((byte*)(1UL << 44), (nuint)1 << 43);
        long count = 0, bytes = 0;
        void Allocate(nuint size)
        {
            Assert.True(allocator.TryAllocateConcurrent(size, 1, out _));
            count++;
            bytes += (long)size;
            Assert.Equal(count, allocator.Statistics.AllocationCount);
            Assert.Equal(bytes, allocator.Statistics.TotalBytesAllocated);
        }

        // Without the move the byte part would carry into the count part at 2^40.
        for (int i = 0; i < 5; i++)
        {
            Allocate((nuint)1 << 38);      // every second one brings the byte part to 2^39: moved
        }

        Allocate(((nuint)1 << 39) + 5);    // too large for the packed word: counted directly
        Allocate(3);

        using var small = new BumpAllocator((byte*)(1UL << 45), (nuint)1 << 30);
        const int allocations = (1 << 23) + 3;   // moved at 2^22; unmoved, the count part would overflow at 2^23
        for (int i = 0; i < allocations; i++)
        {
            small.TryAllocateConcurrent(2, 1, out _);
        }

        Assert.Equal(allocations, small.Statistics.AllocationCount);
        Assert.Equal(2L * allocations, small.Statistics.TotalBytesAllocated);
        Assert.Equal(2L * allocations, small.Statistics.BytesInUse);
    }

    // Model: AllocatorModel's list of live blocks (aligned, owned, disjoint, contents intact),
    // with resets; after everything is freed and a reset, the whole capacity is one block again.
    [Fact]
    public void Random_operation_sequences_match_the_live_block_model()
    {
        const nuint capacity = 32 * 1024;
        long steps = AllocatorModel.Run(
            new ModelSettings { ResetWeight = 1, Iterations = 100, MaxSteps = 120 },
            () => new BumpAllocator(NativeMemorySource.Shared, capacity),
            allocator => allocator.Reset(),
            allocator =>
            {
                allocator.Reset();
                Assert.True(allocator.TryAllocate(capacity, 1, out byte* whole));
                Assert.True(whole == (byte*)allocator.Range.From);
            });

        Assert.True(steps >= 3000, $"ran {steps} steps");
    }
}
