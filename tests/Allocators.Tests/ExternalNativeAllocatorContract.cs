using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// The checks every <see cref="ExternalNativeAllocator"/> profile must pass, run by one test class per
/// library (<see cref="MimallocAllocatorTests"/>, <see cref="JemallocAllocatorTests"/>,
/// <see cref="RpmallocAllocatorTests"/>), each skipped with the loader's reason where its library is missing.
/// </summary>
public abstract unsafe class ExternalNativeAllocatorContract
{
    protected abstract NativeAllocatorLibrary Library { get; }

    private ExternalNativeAllocator Checked() => ExternalNativeAllocator.Load(Library, trackOwnership: true);

    /// <summary>The model-based property test, on a checking instance (so that Owns answers).</summary>
    protected void RunModel()
    {
        long steps = AllocatorModel.Run(
            new ModelSettings(),
            Checked,
            afterAllFreed: allocator =>
            {
                AllocatorStatistics statistics = allocator.Statistics;
                Assert.Equal(0, statistics.BytesInUse);
                Assert.Equal(statistics.AllocationCount, statistics.DeallocationCount);
            });
        Assert.True(steps > 1000, $"only {steps} steps ran");
    }

    /// <summary>
    /// The model on a checking instance that does not count its statistics: every block is checked
    /// and intact as on a counting one, and the statistics stay zero but for failures.
    /// </summary>
    protected void RunModelUncounted()
    {
        long steps = AllocatorModel.Run(
            new ModelSettings { Iterations = 40 },
            () => ExternalNativeAllocator.Load(Library, trackOwnership: true, countStatistics: false),
            afterAllFreed: allocator =>
            {
                AllocatorStatistics statistics = allocator.Statistics;
                Assert.Equal(new AllocatorStatistics(0, 0, null, 0, 0, statistics.FailureCount, 0), statistics);
            });
        Assert.True(steps > 500, $"only {steps} steps ran");
    }

    /// <summary>
    /// An instance that does not count says so, serves, grows and frees blocks as a counting one
    /// does, and reports its failures and nothing else; the default instance counts.
    /// </summary>
    protected void CheckUncountedInstance()
    {
        using ExternalNativeAllocator counting = ExternalNativeAllocator.Load(Library);
        Assert.True(counting.CountsStatistics);

        using ExternalNativeAllocator allocator = ExternalNativeAllocator.Load(Library, countStatistics: false);
        Assert.False(allocator.CountsStatistics);
        Assert.False(allocator.TracksOwnership);
        byte* block = allocator.Allocate(100, 16);
        new Span<byte>(block, 100).Fill(9);
        block = allocator.GrowingReallocate(block, 100, 5000, 16);
        Assert.True(new Span<byte>(block, 100).IndexOfAnyExcept((byte)9) < 0);
        byte* aligned = allocator.Allocate(64, 4096);
        Assert.True(Allocator.IsAligned((nuint)aligned, 4096));
        Assert.False(allocator.TryAllocate(Allocator.MaximumSize, 16, out _));
        Assert.Equal(new AllocatorStatistics(0, 0, null, 0, 0, 1, 0), allocator.Statistics);
        allocator.Deallocate(aligned, 64, 4096);
        allocator.Deallocate(block, 5000, 16);
        Assert.Equal(new AllocatorStatistics(0, 0, null, 0, 0, 1, 0), allocator.Statistics);

        Assert.True(ExternalNativeAllocator.TryLoad(Library, out ExternalNativeAllocator? viaTry, countStatistics: false));
        Assert.False(viaTry.CountsStatistics);
        Assert.True(ExternalNativeAllocator.TryLoad(Library, out ExternalNativeAllocator? checking, out _, trackOwnership: true, countStatistics: false));
        Assert.True(checking.TracksOwnership);
        Assert.False(checking.CountsStatistics);
        checking.Dispose();
    }

    /// <summary>
    /// The usable size of a request is at least the request, every block has at least that (by the
    /// library's own measure), and a block grows in place up to its own usable size and can be used
    /// and freed with it.
    /// </summary>
    protected void CheckUsableSizes()
    {
        using ExternalNativeAllocator allocator = Checked();
        var sizes = new List<nuint>();
        for (nuint size = 1; size <= 300; size++)
        {
            sizes.Add(size);
        }

        for (int shift = 9; shift <= 22; shift++)
        {
            sizes.AddRange([((nuint)1 << shift) - 1, (nuint)1 << shift, ((nuint)1 << shift) + 1]);
        }

        int excess = 0;
        foreach (nuint alignment in new nuint[] { 1, 8, 16, 64, 4096 })
        {
            foreach (nuint size in sizes)
            {
                nuint promised = allocator.GetUsableSize(size, alignment);
                Assert.True(promised >= size, $"usable size {promised} of a request of {size} at {alignment}");
                byte* block = allocator.Allocate(size, alignment);
                Assert.True(Allocator.IsAligned((nuint)block, alignment), $"0x{(nuint)block:X} is not aligned to {alignment}");
                nuint real = allocator.GetBlockUsableSize(block);
                Assert.True(real >= promised, $"the block of {size} at {alignment} has {real} bytes, fewer than the {promised} promised");
                Assert.True(allocator.TryGrowInPlace(block, size, real, alignment), $"the block of {size} at {alignment} did not grow in place to its own usable size {real}");
                new Span<byte>(block, checked((int)real)).Fill(0x5A);
                excess += real > size ? 1 : 0;
                allocator.Deallocate(block, real, alignment);
            }
        }

        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.True(excess > 0, "no request got more than it asked for: the usable sizes look faked");
    }

    /// <summary>A growth the library does in place keeps the address and the contents; one it cannot do leaves the block as it was.</summary>
    protected void CheckGrowthInPlaceIsTheLibrarys()
    {
        using ExternalNativeAllocator allocator = Checked();
        byte* block = allocator.Allocate(100, 16);
        new Span<byte>(block, 100).Fill(7);
        nuint real = allocator.GetBlockUsableSize(block);
        Assert.True(real > 100, $"a request of 100 bytes got exactly {real}");

        // Within the block's own room: in place, and a growing reallocation returns the same address.
        byte* grown = allocator.GrowingReallocate(block, 100, real, 16);
        Assert.True(grown == block, "a growth within the block's usable size moved it");
        Assert.True(new Span<byte>(grown, 100).IndexOfAnyExcept((byte)7) < 0, "contents lost");

        // Far beyond it: the library says no (a small block has no neighbour of 1 MiB), nothing changes.
        Assert.False(allocator.TryGrowInPlace(grown, real, 1 << 20, 16));
        Assert.Equal(real, allocator.GetBlockUsableSize(grown));
        Assert.True(new Span<byte>(grown, 100).IndexOfAnyExcept((byte)7) < 0, "contents lost");

        // And then a moving growth keeps the contents.
        byte* moved = allocator.GrowingReallocate(grown, real, 1 << 20, 16);
        Assert.True(new Span<byte>(moved, 100).IndexOfAnyExcept((byte)7) < 0, "contents lost in the move");
        Assert.True(allocator.GetBlockUsableSize(moved) >= 1 << 20);
        allocator.Deallocate(moved, 1 << 20, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    /// <summary>A checking instance refuses foreign pointers, double frees, other alignments and sizes outside the block's range, changing nothing.</summary>
    protected void CheckBadInputIsRefused()
    {
        using ExternalNativeAllocator allocator = Checked();
        using ExternalNativeAllocator other = Checked();
        byte* block = allocator.Allocate(100, 16);
        byte* foreign = other.Allocate(100, 16);
        nuint usable = allocator.GetUsableSize(100, 16);
        AllocatorStatistics before = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(foreign, 100, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block + 16, 84, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 100, 64));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 99, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, usable + 1, 16));
        Assert.Throws<ArgumentException>(() => allocator.TryGrowInPlace(foreign, 100, 200, 16));
        Assert.Throws<ArgumentException>(() => allocator.GrowingReallocate(foreign, 100, 200, 16));
        Assert.Throws<ArgumentException>(() => allocator.GetBlockUsableSize(foreign));
        Assert.Throws<ArgumentException>(() => allocator.Allocate(16, 24));
        Assert.False(allocator.Owns(foreign));
        Assert.True(allocator.Owns(block));
        Assert.Equal(before, allocator.Statistics);

        allocator.Deallocate(block, usable, 16);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block, 100, 16));
        other.Deallocate(foreign, 100, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    /// <summary>Sizes no allocator can serve make the Try forms return false (the library returns null) and leave the block valid.</summary>
    protected void CheckImpossibleSizesReturnFalse()
    {
        using ExternalNativeAllocator allocator = Checked();
        Assert.False(allocator.TryAllocate(Allocator.MaximumSize, 16, out byte* none));
        Assert.True(none == null);
        Assert.False(allocator.TryAllocate((nuint)1 << 48, 4096, out _));
        byte* block = allocator.Allocate(64, 16);
        new Span<byte>(block, 64).Fill(3);
        Assert.False(allocator.TryGrowingReallocate(block, 64, (nuint)1 << 48, 16, out byte* grown));
        Assert.True(grown == null);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.GrowingReallocate(block, 64, Allocator.MaximumSize, 16));
        Assert.True(new Span<byte>(block, 64).IndexOfAnyExcept((byte)3) < 0);
        allocator.Deallocate(block, 64, 16);
        Assert.Equal(4, allocator.Statistics.FailureCount);   // two allocations, two growths
    }

    /// <summary>Blocks allocated on one thread are filled, checked and freed on another (the libraries are thread-safe; rpmalloc's threads are initialised on first use).</summary>
    protected void CheckCrossThreadFrees()
    {
        using ExternalNativeAllocator allocator = ExternalNativeAllocator.Load(Library);
        const int Count = 2000;
        var blocks = new nint[Count];
        var producer = new Thread(() =>
        {
            for (int i = 0; i < Count; i++)
            {
                int size = 16 + (i * 37 % 4000);
                byte* block = allocator.Allocate((nuint)size, 16);
                new Span<byte>(block, size).Fill((byte)i);
                blocks[i] = (nint)block;
            }
        });
        producer.Start();
        Assert.True(producer.Join(TimeSpan.FromSeconds(10)), "the producer did not finish");

        string? error = null;
        var consumer = new Thread(() =>
        {
            for (int i = 0; i < Count; i++)
            {
                int size = 16 + (i * 37 % 4000);
                if (new Span<byte>((byte*)blocks[i], size).IndexOfAnyExcept((byte)i) >= 0)
                {
                    error ??= $"block {i} lost its pattern";
                }

                allocator.Deallocate((byte*)blocks[i], (nuint)size, 16);
            }
        });
        consumer.Start();
        Assert.True(consumer.Join(TimeSpan.FromSeconds(10)), "the consumer did not finish");
        Assert.Null(error);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }
}
