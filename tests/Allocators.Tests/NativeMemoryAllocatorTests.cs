using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

// These tests also pin the AllocatorBase rules (zero sizes, the sentinel, the Reallocate dispatcher,
// argument validation) through the simplest concrete allocator.
public unsafe class NativeMemoryAllocatorTests
{
    // W-AL3: the seed's sentinel (usize::MAX) was odd, so misaligned for any alignment above one.
    [Fact]
    public void W_AL3_zero_size_returns_the_sentinel_aligned_to_the_request_and_counts_nothing()
    {
        using var allocator = new NativeMemoryAllocator();
        for (nuint alignment = 1; alignment <= 4096; alignment <<= 1)
        {
            byte* pointer = allocator.Allocate(0, alignment);
            Assert.True(pointer == Allocator.ZeroSizeSentinel);
            Assert.True(Allocator.IsAligned((nuint)pointer, alignment));
        }

        Assert.True(allocator.TryAllocate(0, 64, out byte* viaTry));
        Assert.True(viaTry == Allocator.ZeroSizeSentinel);
        Assert.Equal(0, allocator.Statistics.AllocationCount);
    }

    [Fact]
    public void Free_of_the_sentinel_with_size_zero_is_a_no_op()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        allocator.Deallocate(Allocator.ZeroSizeSentinel, 0, 16);
        allocator.Deallocate(null, 0, 16);
        Assert.Equal(default, allocator.Statistics);
    }

    [Fact]
    public void Reallocate_from_zero_allocates()
    {
        using var allocator = new NativeMemoryAllocator();
        byte* pointer = allocator.Reallocate(Allocator.ZeroSizeSentinel, 0, 100, 8);
        Assert.True(pointer != Allocator.ZeroSizeSentinel && pointer != null);
        Assert.Equal(100, allocator.Statistics.BytesInUse);
        allocator.Deallocate(pointer, 100, 8);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Reallocate_to_zero_frees_and_returns_the_sentinel()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* pointer = allocator.Allocate(100, 64);
        byte* result = allocator.Reallocate(pointer, 100, 0, 64);
        Assert.True(result == Allocator.ZeroSizeSentinel);
        Assert.False(allocator.Owns(pointer));
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(1, allocator.Statistics.DeallocationCount);
    }

    [Fact]
    public void Reallocate_to_the_same_size_returns_the_pointer_and_changes_nothing()
    {
        using var allocator = new NativeMemoryAllocator();
        byte* pointer = allocator.Allocate(48, 8);
        var before = allocator.Statistics;
        Assert.True(allocator.Reallocate(pointer, 48, 48, 8) == pointer);
        Assert.Equal(before, allocator.Statistics);
        allocator.Deallocate(pointer, 48, 8);
    }

    [Theory]
    [InlineData(8u)]
    [InlineData(256u)]
    public void AllocateZeroed_returns_zeroed_memory(uint alignment)
    {
        using var allocator = new NativeMemoryAllocator();
        const int Size = 1000;
        for (int round = 0; round < 8; round++)
        {
            byte* dirty = allocator.Allocate(Size, alignment);
            new Span<byte>(dirty, Size).Fill(0xFF);
            allocator.Deallocate(dirty, Size, alignment);

            byte* zeroed = allocator.AllocateZeroed(Size, alignment);
            Assert.True(new ReadOnlySpan<byte>(zeroed, Size).IndexOfAnyExcept((byte)0) < 0);
            allocator.Deallocate(zeroed, Size, alignment);
        }
    }

    [Theory]
    [InlineData(8u)]
    [InlineData(16u)]
    [InlineData(32u)]
    [InlineData(4096u)]
    public void Grow_and_shrink_keep_contents(uint alignment)
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* pointer = allocator.Allocate(64, alignment);
        Fill(pointer, 64);

        pointer = allocator.GrowingReallocate(pointer, 64, 100_000, alignment);
        Assert.True(Allocator.IsAligned((nuint)pointer, alignment));
        AssertFilled(pointer, 64);
        Fill(pointer, 100_000);

        pointer = allocator.ShrinkingReallocate(pointer, 100_000, 10, alignment);
        Assert.True(Allocator.IsAligned((nuint)pointer, alignment));
        AssertFilled(pointer, 10);

        pointer = allocator.Reallocate(pointer, 10, 5000, alignment);
        AssertFilled(pointer, 10);
        Assert.Equal(5000, allocator.Statistics.BytesInUse);
        allocator.Deallocate(pointer, 5000, alignment);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Every_alignment_from_1_to_4096_is_honoured_by_both_api_families()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        var blocks = new List<(nuint Address, nuint Size, nuint Alignment)>();
        for (nuint alignment = 1; alignment <= 4096; alignment <<= 1)
        {
            foreach (nuint size in new nuint[] { 1, 7, alignment, alignment + 1, 3 * alignment })
            {
                byte* pointer = allocator.Allocate(size, alignment);
                Assert.True(Allocator.IsAligned((nuint)pointer, alignment), $"{size} bytes aligned to {alignment}");
                new Span<byte>(pointer, (int)size).Fill(0xAB);
                blocks.Add(((nuint)pointer, size, alignment));
            }
        }

        Assert.True(NativeMemoryAllocator.MallocAlignment is 8 or 16);
        foreach (var (address, size, alignment) in blocks)
        {
            // Grow across the families' boundary keeps the family chosen by the alignment.
            byte* grown = allocator.GrowingReallocate((byte*)address, size, size + 5000, alignment);
            Assert.True(Allocator.IsAligned((nuint)grown, alignment));
            Assert.True(new ReadOnlySpan<byte>(grown, (int)size).IndexOfAnyExcept((byte)0xAB) < 0);
            allocator.Deallocate(grown, size + 5000, alignment);
        }

        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(3u)]
    [InlineData(48u)]
    [InlineData((1u << 30) * 2)]
    public void Invalid_alignment_throws_ArgumentException(uint alignment)
    {
        using var allocator = new NativeMemoryAllocator();
        Assert.Throws<ArgumentException>(() => allocator.Allocate(8, alignment));
        Assert.Throws<ArgumentException>(() => allocator.TryAllocate(8, alignment, out _));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(Allocator.ZeroSizeSentinel, 0, alignment));
        Assert.Equal(default, allocator.Statistics);
    }

    [Fact]
    public void Size_overflow_throws_ArgumentOutOfRangeException()
    {
        using var allocator = new NativeMemoryAllocator();
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.Allocate(nuint.MaxValue - 3, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.TryAllocate(Allocator.MaximumSize + 1, 8, out _));
        Assert.Equal(default, allocator.Statistics);
    }

    [Fact]
    public void Null_pointer_with_non_zero_size_throws()
    {
        using var allocator = new NativeMemoryAllocator();
        Assert.Throws<ArgumentNullException>(() => allocator.Deallocate(null, 8, 8));
        Assert.Throws<ArgumentNullException>(() => allocator.GrowingReallocate(null, 8, 16, 8));
        Assert.Throws<ArgumentNullException>(() => allocator.ShrinkingReallocate(null, 16, 8, 8));
    }

    [Fact]
    public void Non_sentinel_pointer_with_size_zero_throws()
    {
        using var allocator = new NativeMemoryAllocator();
        byte* pointer = allocator.Allocate(8, 8);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 0, 8));
        allocator.Deallocate(pointer, 8, 8);
    }

    [Fact]
    public void GrowingReallocate_to_a_size_not_larger_throws()
    {
        using var allocator = new NativeMemoryAllocator();
        byte* pointer = allocator.Allocate(64, 8);
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.GrowingReallocate(pointer, 64, 64, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.GrowingReallocate(pointer, 64, 32, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.ShrinkingReallocate(pointer, 64, 64, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.ShrinkingReallocate(pointer, 64, 0, 8));
        Assert.Equal(64, allocator.Statistics.BytesInUse);
        allocator.Deallocate(pointer, 64, 8);
    }

    [Fact]
    public void Exhaustion_throws_AllocatorExhaustedException_or_returns_false_and_counts_failures()
    {
        using var allocator = new NativeMemoryAllocator();
        var error = Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(Allocator.MaximumSize, 8));
        Assert.Equal(nameof(NativeMemoryAllocator), error.AllocatorName);
        Assert.False(allocator.TryAllocate(Allocator.MaximumSize, 64, out byte* failed));
        Assert.True(failed == null);

        byte* pointer = allocator.Allocate(32, 8);
        Fill(pointer, 32);
        Assert.False(allocator.TryGrowingReallocate(pointer, 32, Allocator.MaximumSize, 8, out _));
        AssertFilled(pointer, 32);
        allocator.Deallocate(pointer, 32, 8);

        var statistics = allocator.Statistics;
        Assert.Equal(3, statistics.FailureCount);
        Assert.Equal(1, statistics.AllocationCount);
        Assert.Equal(0, statistics.BytesInUse);
    }

    [Fact]
    public void In_place_growth_is_never_possible_and_shrinking_always_is()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* pointer = allocator.Allocate(100, 32);
        Assert.False(allocator.TryGrowInPlace(pointer, 100, 101, 32));
        Assert.True(allocator.TryGrowInPlace(pointer, 100, 100, 32));
        Assert.True(allocator.TryShrinkInPlace(pointer, 100, 40, 32));
        Assert.Equal(40, allocator.Statistics.BytesInUse);
        Assert.Equal((nuint)40, allocator.GetUsableSize(40, 32));
        allocator.Deallocate(pointer, 40, 32);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Statistics_count_requested_sizes_peak_and_moves()
    {
        using var allocator = new NativeMemoryAllocator();
        byte* a = allocator.Allocate(100, 8);
        byte* b = allocator.Allocate(300, 64);
        // A read at the peak: the peak is exact while one processor's stripe took every update, and
        // otherwise the largest a read has seen (the thread may migrate between these calls).
        Assert.Equal(400, allocator.Statistics.BytesInUse);
        allocator.Deallocate(a, 100, 8);
        byte* c = allocator.Allocate(50, 8);

        var statistics = allocator.Statistics;
        Assert.Equal(350, statistics.BytesInUse);
        Assert.Equal(400, statistics.PeakBytesInUse);
        Assert.Equal(3, statistics.AllocationCount);
        Assert.Equal(1, statistics.DeallocationCount);
        Assert.Equal(450, statistics.TotalBytesAllocated);
        Assert.Null(statistics.Capacity);
        Assert.Equal(0, statistics.FailureCount);

        // Growing far enough forces realloc to move; a move counts one allocation and one free more.
        byte* moved = allocator.GrowingReallocate(c, 50, 1 << 20, 8);
        statistics = allocator.Statistics;
        Assert.Equal(300 + (1 << 20), statistics.BytesInUse);
        if (moved != c)
        {
            Assert.Equal(4, statistics.AllocationCount);
            Assert.Equal(2, statistics.DeallocationCount);
        }

        allocator.Deallocate(b, 300, 64);
        allocator.Deallocate(moved, 1 << 20, 8);
        statistics = allocator.Statistics;
        Assert.Equal(0, statistics.BytesInUse);
        Assert.Equal(statistics.AllocationCount, statistics.DeallocationCount);
    }

    [Fact]
    public void Untracked_instance_owns_nothing()
    {
        using var allocator = new NativeMemoryAllocator();
        byte* pointer = allocator.Allocate(16, 16);
        Assert.False(allocator.TracksOwnership);
        Assert.False(allocator.Owns(pointer));
        allocator.Deallocate(pointer, 16, 16);
        Assert.False(NativeMemoryAllocator.Shared.TracksOwnership);
    }

    [Fact]
    public void Tracking_instance_owns_exactly_its_live_blocks()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* pointer = allocator.Allocate(16, 16);
        Assert.True(allocator.Owns(pointer));
        Assert.False(allocator.Owns(pointer + 1));
        Assert.False(allocator.Owns(Allocator.ZeroSizeSentinel));
        allocator.Deallocate(pointer, 16, 16);
        Assert.False(allocator.Owns(pointer));
    }

    [Fact]
    public void Free_of_foreign_pointer_throws_and_changes_nothing_when_tracking()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* mine = allocator.Allocate(64, 8);
        byte* foreign = (byte*)System.Runtime.InteropServices.NativeMemory.Alloc(64);
        try
        {
            var before = allocator.Statistics;
            Assert.Throws<ArgumentException>(() => allocator.Deallocate(foreign, 64, 8));
            Assert.Throws<ArgumentException>(() => allocator.GrowingReallocate(foreign, 64, 128, 8));
            Assert.Throws<ArgumentException>(() => allocator.TryShrinkInPlace(foreign, 64, 32, 8));
            Assert.Equal(before, allocator.Statistics);
            Assert.True(allocator.Owns(mine));
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(foreign);
        }

        allocator.Deallocate(mine, 64, 8);
    }

    [Fact]
    public void Double_free_throws_and_changes_nothing_when_tracking()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* pointer = allocator.Allocate(64, 128);
        allocator.Deallocate(pointer, 64, 128);
        var before = allocator.Statistics;
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 64, 128));
        Assert.Equal(before, allocator.Statistics);
    }

    [Fact]
    public void Free_with_another_size_or_alignment_throws_when_tracking()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* pointer = allocator.Allocate(64, 64);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 65, 64));

        // An alignment of another API family would free with the wrong function.
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 64, 8));
        Assert.True(allocator.Owns(pointer));
        allocator.Deallocate(pointer, 64, 64);
    }

    [Fact]
    public void Dispose_of_a_tracking_instance_frees_live_blocks()
    {
        var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* a = allocator.Allocate(100, 8);
        _ = allocator.Allocate(200, 4096);
        allocator.Dispose();
        Assert.False(allocator.Owns(a));
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Equal(2, allocator.Statistics.DeallocationCount);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Concurrent_use_keeps_counters_consistent(bool trackOwnership)
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership);
        const int Threads = 4;
        const int Rounds = 500;
        long expectedTotal = 0;
        var threads = new Thread[Threads];
        for (int t = 0; t < Threads; t++)
        {
            int seed = t;
            threads[t] = new Thread(() =>
            {
                var random = new Random(seed);
                long total = 0;
                var live = new List<(nuint Address, nuint Size, nuint Alignment)>();
                for (int i = 0; i < Rounds; i++)
                {
                    nuint size = (nuint)random.Next(1, 3000);
                    nuint alignment = (nuint)1 << random.Next(0, 9);
                    byte* pointer = allocator.Allocate(size, alignment);
                    new Span<byte>(pointer, (int)size).Fill((byte)seed);
                    total += (long)size;
                    live.Add(((nuint)pointer, size, alignment));
                    if (live.Count > 8 || random.Next(3) == 0)
                    {
                        int pick = random.Next(live.Count);
                        var (address, blockSize, blockAlignment) = live[pick];
                        Assert.True(new ReadOnlySpan<byte>((void*)address, (int)blockSize).IndexOfAnyExcept((byte)seed) < 0);
                        allocator.Deallocate((byte*)address, blockSize, blockAlignment);
                        live.RemoveAt(pick);
                    }
                }

                foreach (var (address, size, alignment) in live)
                {
                    allocator.Deallocate((byte*)address, size, alignment);
                }

                Interlocked.Add(ref expectedTotal, total);
            });
        }

        foreach (var thread in threads)
        {
            thread.Start();
        }

        foreach (var thread in threads)
        {
            thread.Join();
        }

        var statistics = allocator.Statistics;
        Assert.Equal(0, statistics.BytesInUse);
        Assert.Equal(Threads * Rounds, statistics.AllocationCount);
        Assert.Equal(Threads * Rounds, statistics.DeallocationCount);
        Assert.Equal(expectedTotal, statistics.TotalBytesAllocated);
        Assert.InRange(statistics.PeakBytesInUse, 1, expectedTotal);
    }

    // Model: AllocatorModel's list of live blocks (aligned, owned, disjoint, contents intact), run on a
    // tracking instance so that Owns can answer; alignments up to 4096 cover both NativeMemory families.
    [Fact]
    public void Behaves_like_the_reference_model()
    {
        var settings = new ModelSettings { MaxSize = 5000, MaxAlignmentLog2 = 12, Iterations = 100 };
        long steps = AllocatorModel.Run(
            settings,
            () => new NativeMemoryAllocator(trackOwnership: true),
            afterAllFreed: allocator =>
            {
                var statistics = allocator.Statistics;
                Assert.Equal(0, statistics.BytesInUse);
                Assert.Equal(statistics.AllocationCount, statistics.DeallocationCount);
            });
        Assert.True(steps >= 3000, $"only {steps} steps ran");
    }

    private static void Fill(byte* pointer, int length)
    {
        var span = new Span<byte>(pointer, length);
        for (int i = 0; i < span.Length; i++)
        {
            span[i] = (byte)(i * 7);
        }
    }

    private static void AssertFilled(byte* pointer, int length)
    {
        var span = new ReadOnlySpan<byte>(pointer, length);
        for (int i = 0; i < span.Length; i++)
        {
            if (span[i] != (byte)(i * 7))
            {
                Assert.Fail($"byte {i} changed");
            }
        }
    }
}
