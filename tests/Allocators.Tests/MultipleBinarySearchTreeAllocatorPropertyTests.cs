using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;
using CsCheck;
using static AllocHosting.Allocators.Tests.TreeAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Random operation sequences checked against the model and the allocator's own invariants.
public unsafe class MultipleBinarySearchTreeAllocatorPropertyTests
{
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
                    int[] initial = FreeBlockCounts(allocator);
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
                    Assert.Equal(initial, FreeBlockCounts(allocator));
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

    // Model: AllocatorModel's list of live blocks. After every step, frees of a live block with a
    // size of a larger or smaller size class, and of a pointer inside it, must throw
    // ArgumentException and be refused like an exhausted request: the model is unchanged (contents
    // intact, no overlap), and so are the trees, the caches and the statistics. The 4 KiB top class
    // makes many blocks over-size, checked by their number of top blocks.
    [Theory]
    [InlineData(0)]
    [InlineData(96)]
    public void Random_wrong_size_and_interior_frees_are_refused_and_leave_the_model_equal(int offset)
    {
        var settings = new ModelSettings { MaxSize = 10000, MaxAlignmentLog2 = 12, MaxSteps = 120, Iterations = 50 };
        nuint size = (64 * KiB) + 96;
        byte* buffer = (byte*)NativeMemory.AlignedAlloc(size + (nuint)offset, 4096);
        try
        {
            long refused = 0;
            AllocatorModel.Steps(settings).Array[settings.MinSteps, settings.MaxSteps].Sample(
                steps =>
                {
                    using var allocator = new MultipleBinarySearchTreeAllocator(buffer + offset, size, 32, 4 * KiB);
                    var runner = new AllocatorModel.Runner(allocator);
                    foreach (var step in steps)
                    {
                        runner.Apply(step, null);
                        if (runner.Live.Count == 0)
                        {
                            continue;
                        }

                        var block = runner.Live[step.Pick % runner.Live.Count];
                        nuint usable = allocator.GetUsableSize(block.Size, block.Alignment);
                        var pointer = (byte*)block.Address;
                        var bad = new List<(nuint Offset, nuint Size)> { (0, usable + 1) };
                        if (usable > 32)
                        {
                            bad.Add((0, usable / 2));
                            nuint inner = Math.Min(usable / 2, 4 * KiB);
                            bad.Add((inner, inner));
                            bad.Add((usable - 32, 32));
                        }

                        foreach (var (at, wrong) in bad)
                        {
                            int[] trees = FreeBlockCounts(allocator);
                            int[] cached = [.. Enumerable.Range(0, allocator.SizeClassCount).Select(allocator.CachedBlockCount)];
                            var statistics = allocator.Statistics;
                            Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer + at, wrong, 1));
                            Assert.Equal(trees, FreeBlockCounts(allocator));
                            Assert.Equal(cached, Enumerable.Range(0, allocator.SizeClassCount).Select(allocator.CachedBlockCount));
                            Assert.Equal(statistics, allocator.Statistics);
                            refused++;
                        }

                        runner.CheckInvariants();
                        allocator.Validate();
                    }

                    runner.FreeAll();
                    allocator.Validate();
                    Assert.Equal(0, allocator.Statistics.BytesInUse);
                },
                iter: settings.Iterations,
                threads: 1);
            Assert.True(refused >= 2000, $"only {refused} bad frees were tried");
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
                Assert.Equal([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4], FreeBlockCounts(allocator));
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
                Assert.Equal([0, 0, 0, 0, 0, 0, 0, 64], FreeBlockCounts(allocator));
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
                        int[] trees = FreeBlockCounts(allocator);
                        int[] cached = [.. Enumerable.Range(0, allocator.SizeClassCount).Select(allocator.CachedBlockCount)];
                        var statistics = allocator.Statistics;
                        Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)address, blockSize, 8));
                        Assert.Equal(trees, FreeBlockCounts(allocator));
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
}
