using AllocHosting.Allocators.Interop;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Issue 11, "Reliability suite": kernel calls refused through the system-call seam
/// (<see cref="FakeLinuxSystemCalls"/>) with the errnos the kernel really gives. Each refusal surfaces
/// as <see cref="MemoryMapSource"/> documents it (a failed request: <see langword="false"/> or
/// <see cref="MemorySourceExhaustedException"/>, and <see cref="AllocatorExhaustedException"/> from the
/// allocators; or, for an optional step, a degradation reported once), nothing stays mapped that
/// should not (the stand-in counts every byte mapped and unmapped), and the next call succeeds.
/// </summary>
public unsafe class KernelFaultTests
{
    private const int EPERM = 1;
    private const int EAGAIN = 11;
    private const int ENOMEM = 12;
    private const int EINVAL = 22;
    private const int ENOSYS = 38;
    private const nuint Region = 64 * 1024;

    public static TheoryData<int> MapErrnos => new() { ENOMEM, EAGAIN, EPERM, EINVAL };

    // ---- MemoryMapSource. ----

    [LinuxTheory]
    [MemberData(nameof(MapErrnos))]
    public void A_refused_mmap_fails_the_request_maps_nothing_and_the_next_call_succeeds(int errno)
    {
        var kernel = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(null, kernel);

        kernel.RefuseAt("mmap", 1, errno);
        Assert.False(source.TryObtain(Region, out byte* region));
        Assert.True(region == null);
        Assert.Contains($"mmap failed with {LinuxErrors.Name(errno)}", source.LastFailure, StringComparison.Ordinal);

        kernel.RefuseAt("mmap", 1, errno);
        var error = Assert.Throws<MemorySourceExhaustedException>(() => source.Obtain(Region));
        Assert.IsAssignableFrom<OutOfMemoryException>(error);
        Assert.Contains(LinuxErrors.Name(errno), error.Message, StringComparison.Ordinal);

        kernel.RefuseAt("mmap", 1, errno);
        Assert.False(source.TryObtainAligned(Region, 2 << 20, out _));

        Assert.Equal(0, kernel.LiveMappedBytes);
        Assert.Equal(0, source.MappedBytes);

        // Recovery: the fault was for one call each time; the next one maps.
        byte* recovered = source.Obtain(Region);
        recovered[Region - 1] = 1;
        source.Release(recovered, Region);
        Assert.Equal(0, kernel.LiveMappedBytes);
    }

    [LinuxTheory]
    [InlineData(EPERM, true)]
    [InlineData(ENOSYS, true)]
    [InlineData(EINVAL, false)]
    [InlineData(ENOMEM, false)]
    [InlineData(EAGAIN, false)]
    public void A_refused_mbind_degrades_or_fails_as_documented_and_leaks_no_mapping(int errno, bool degrades)
    {
        // MemoryMapSource's remarks: mbind refused with ENOSYS or EPERM (no NUMA, a sandbox) degrades
        // to no policy, said once; any other errno fails the request and unmaps the region.
        var kernel = new FakeLinuxSystemCalls();
        var warnings = new List<string>();
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Preferred(0), Warning = warnings.Add }, kernel);

        kernel.RefuseAt("mbind", 1, errno);
        bool obtained = source.TryObtainAligned(Region, 2 << 20, out byte* region);   // over-aligned: the trimmed head and tail must not leak either
        Assert.Equal(degrades, obtained);
        if (degrades)
        {
            Assert.Contains("mbind", source.FallbackReason, StringComparison.Ordinal);
            Assert.Single(warnings);
            Assert.Equal((long)Region, kernel.LiveMappedBytes);
            source.Release(region, Region);
        }
        else
        {
            Assert.Contains($"failed with {LinuxErrors.Name(errno)}", source.LastFailure, StringComparison.Ordinal);
            Assert.Null(source.FallbackReason);
            Assert.Empty(warnings);
        }

        Assert.Equal(0, kernel.LiveMappedBytes);
        Assert.Equal(0, source.MappedBytes);

        byte* recovered = source.Obtain(Region);
        recovered[0] = 1;
        source.Release(recovered, Region);
        Assert.Equal(0, kernel.LiveMappedBytes);
    }

    [LinuxTheory]
    [InlineData("madvise(MADV_HUGEPAGE)", EINVAL, true)]
    [InlineData("madvise(MADV_HUGEPAGE)", EPERM, true)]
    [InlineData("madvise(MADV_HUGEPAGE)", EAGAIN, true)]
    [InlineData("madvise(MADV_DONTDUMP)", EINVAL, false)]
    [InlineData("madvise(MADV_DONTDUMP)", EPERM, false)]
    [InlineData("madvise(MADV_DONTDUMP)", ENOMEM, false)]
    [InlineData("madvise(MADV_POPULATE_WRITE)", ENOMEM, false)]
    [InlineData("madvise(MADV_POPULATE_WRITE)", EAGAIN, false)]
    [InlineData("madvise(MADV_POPULATE_WRITE)", EPERM, false)]
    public void A_refused_madvise_degrades_or_fails_as_documented_and_leaks_no_mapping(string call, int errno, bool degrades)
    {
        // The huge page advice is optional (degrades once); the core dump advice is required; the
        // populate advice fails the request unless the kernel does not know it (EINVAL: pages are
        // touched instead) or it was interrupted (EINTR: tried again).
        var kernel = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(new MemoryMapSourceOptions { TransparentHugePages = true, Prefault = true, Warning = _ => { } }, kernel);

        kernel.RefuseAt(call, 1, errno);
        bool obtained = source.TryObtain(Region, out byte* region);
        Assert.Equal(degrades, obtained);
        if (degrades)
        {
            Assert.False(source.TransparentHugePagesApplied);
            Assert.Contains(call, source.FallbackReason, StringComparison.Ordinal);
            source.Release(region, Region);
        }
        else
        {
            Assert.Contains(call, source.LastFailure, StringComparison.Ordinal);
            Assert.Contains(LinuxErrors.Name(errno), source.LastFailure, StringComparison.Ordinal);
        }

        Assert.Equal(0, kernel.LiveMappedBytes);
        Assert.Equal(0, source.MappedBytes);

        byte* recovered = source.Obtain(Region);
        Assert.Equal(0, recovered[Region - 1]);
        source.Release(recovered, Region);
        Assert.Equal(0, kernel.LiveMappedBytes);
    }

    [LinuxTheory]
    [MemberData(nameof(MapErrnos))]
    public void A_refused_mremap_leaves_the_region_as_it_was_and_the_next_remap_succeeds(int errno)
    {
        var kernel = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(null, kernel);
        byte* region = source.Obtain(Region);
        new Span<byte>(region, (int)Region).Fill(0x5A);

        kernel.RefuseAt("mremap", 1, errno);
        Assert.False(source.TryRemap(region, Region, 4 * Region, out byte* moved));
        Assert.True(moved == null);
        Assert.Contains($"mremap failed with {LinuxErrors.Name(errno)}", source.LastFailure, StringComparison.Ordinal);

        kernel.RefuseAt("mremap(in place)", 1, errno);
        Assert.False(source.TryResizeInPlace(region, Region, 4 * Region));

        Assert.Equal((long)Region, kernel.LiveMappedBytes);
        Assert.Equal((long)Region, source.MappedBytes);
        Assert.True(new Span<byte>(region, (int)Region).IndexOfAnyExcept((byte)0x5A) < 0, "the region kept its contents");

        byte* grown = source.Remap(region, Region, 4 * Region);
        Assert.True(new Span<byte>(grown, (int)Region).IndexOfAnyExcept((byte)0x5A) < 0, "the grown region kept its contents");
        source.Release(grown, 4 * Region);
        Assert.Equal(0, kernel.LiveMappedBytes);
    }

    // ---- MemoryMapAllocator. ----

    [LinuxTheory]
    [MemberData(nameof(MapErrnos))]
    public void A_refused_mmap_is_exhaustion_for_the_allocator_and_the_next_allocation_succeeds(int errno)
    {
        var kernel = new FakeLinuxSystemCalls();
        using var allocator = new MemoryMapAllocator(new MemoryMapSource(null, kernel), registerBlocks: true);
        byte* keep = allocator.Allocate(100, 8);
        AllocatorStatistics before = allocator.Statistics;

        kernel.RefuseAt("mmap", 1, errno);
        Assert.False(allocator.TryAllocate(5000, 8, out _));
        kernel.RefuseAt("mmap", 1, errno);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(5000, 4096));
        kernel.RefuseAt("mmap", 1, errno);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(5000, 1 << 21));

        Assert.Equal(before with { FailureCount = before.FailureCount + 3 }, allocator.Statistics);
        Assert.Equal(1, allocator.LiveBlockCount);

        byte* next = allocator.Allocate(5000, 8);
        allocator.Deallocate(next, 5000, 8);
        allocator.Deallocate(keep, 100, 8);
        Assert.Equal(0, kernel.LiveMappedBytes);
    }

    [LinuxTheory]
    [InlineData(ENOMEM, 8u)]
    [InlineData(EAGAIN, 8u)]
    [InlineData(EPERM, 8u)]
    [InlineData(EINVAL, 8u)]
    [InlineData(ENOMEM, 1u << 21)]
    [InlineData(EAGAIN, 1u << 21)]
    public void A_refused_mremap_during_a_grow_keeps_the_block_live_and_freeable(int errno, uint alignment)
    {
        // Page-aligned blocks grow by mremap (in place, then moving); over-aligned ones in place or
        // by mapping a new aligned block: every one of those calls is refused.
        var kernel = new FakeLinuxSystemCalls();
        using var allocator = new MemoryMapAllocator(new MemoryMapSource(null, kernel), registerBlocks: false);
        byte* block = allocator.Allocate(3000, alignment);
        new Span<byte>(block, 3000).Fill(7);
        AllocatorStatistics before = allocator.Statistics;

        kernel.Refuse = call => call is "mremap" or "mremap(in place)" or "mmap" ? errno : 0;
        Assert.False(allocator.TryGrowingReallocate(block, 3000, 300_000, alignment, out _));
        Assert.Throws<AllocatorExhaustedException>(() => allocator.GrowingReallocate(block, 3000, 300_000, alignment));
        kernel.Refuse = null;

        Assert.Equal(before with { FailureCount = before.FailureCount + 2 }, allocator.Statistics);
        Assert.Equal(1, allocator.LiveBlockCount);
        Assert.True(allocator.Owns(block));
        Assert.True(new Span<byte>(block, 3000).IndexOfAnyExcept((byte)7) < 0, "the block kept its contents");

        byte* grown = allocator.GrowingReallocate(block, 3000, 300_000, alignment);   // recovered
        Assert.True(new Span<byte>(grown, 3000).IndexOfAnyExcept((byte)7) < 0, "the grown block kept its contents");
        allocator.Deallocate(grown, 300_000, alignment);
        Assert.Equal(0, allocator.LiveBlockCount);
        Assert.Equal(0, kernel.LiveMappedBytes);
    }

    [LinuxTheory]
    [InlineData(ENOMEM)]
    [InlineData(EAGAIN)]
    public void A_refused_mremap_during_a_shrink_keeps_the_block_s_pages_instead_of_failing(int errno)
    {
        // Found by the model below: the shrink threw AllocatorExhaustedException, which a shrink never
        // may. Splitting a mapping can really fail (ENOMEM at vm.max_map_count); the block keeps its pages.
        var kernel = new FakeLinuxSystemCalls();
        using var allocator = new MemoryMapAllocator(new MemoryMapSource(null, kernel), registerBlocks: false);
        byte* block = allocator.Allocate(40_000, 8);
        new Span<byte>(block, 40_000).Fill(9);
        long mapped = kernel.LiveMappedBytes;

        kernel.RefuseAt("mremap(in place)", 1, errno);
        byte* shrunk = allocator.ShrinkingReallocate(block, 40_000, 100, 8);
        Assert.True(shrunk == block, "a shrink keeps the address");
        Assert.Equal(mapped, kernel.LiveMappedBytes);
        Assert.True(new Span<byte>(block, 100).IndexOfAnyExcept((byte)9) < 0, "the block kept its contents");

        byte* grown = allocator.GrowingReallocate(block, 100, 30_000, 8);
        Assert.True(grown == block, "the kept pages serve a grow within them");
        allocator.Deallocate(grown, 30_000, 8);
        Assert.Equal(0, kernel.LiveMappedBytes);
    }

    [LinuxFact]
    public void The_model_holds_while_the_kernel_refuses_every_few_calls_and_nothing_stays_mapped()
    {
        // The model-based test over a MemoryMapAllocator whose kernel refuses mmap, mremap, madvise
        // and mbind now and then with a rotating errno: each refusal is exhaustion (the model allows
        // it at any step, and checks that the block of a refused grow is intact), never a lost or
        // corrupted block; once every block is freed nothing is mapped.
        var kernel = new FakeLinuxSystemCalls();
        int calls = 0;
        int[] errnos = [ENOMEM, EAGAIN, EINVAL, ENOMEM];
        kernel.Refuse = call =>
        {
            int n = Interlocked.Increment(ref calls);
            bool refuse = call is "mmap" or "mremap" or "mremap(in place)" or "mbind" or "madvise(MADV_DONTDUMP)" && n % 7 == 0;
            return refuse ? errnos[n / 7 % errnos.Length] : 0;
        };
        var options = new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Preferred(0), Warning = _ => { } };
        long steps = AllocatorModel.Run(
            BadInputSettings.For("memorymap") with { Iterations = 40 },
            () => new MemoryMapAllocator(new MemoryMapSource(options, kernel), registerBlocks: false),
            afterAllFreed: allocator => Assert.Equal(0, allocator.LiveBlockCount));

        Assert.True(steps > 0);
        Assert.Equal(0, kernel.LiveMappedBytes);
        Assert.True(calls > 100, $"only {calls} system calls were made");
    }

    // ---- ThreadLocalAllocator: its fallback for over-size blocks maps through the seam. ----

    [LinuxFact]
    public void The_model_holds_for_a_thread_local_allocator_whose_fallback_s_kernel_refuses_every_few_calls()
    {
        // Sizes beyond the slabs (256 KiB), so that blocks move between the slabs and the fallback
        // while mmap and mremap are refused now and then.
        var kernel = new FakeLinuxSystemCalls();
        int calls = 0;
        kernel.Refuse = call => call is "mmap" or "mremap" or "mremap(in place)" && Interlocked.Increment(ref calls) % 5 == 0 ? (calls % 2 == 0 ? ENOMEM : EAGAIN) : 0;
        using var fallback = new MemoryMapAllocator(new MemoryMapSource(null, kernel), registerBlocks: true);
        long steps = AllocatorModel.Run(
            BadInputSettings.For("threadlocal") with { MaxSize = 600_000, Iterations = 20, MaxSteps = 60 },
            () => new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { Fallback = fallback }),
            afterAllFreed: _ => Assert.Equal(0, fallback.LiveBlockCount));

        Assert.True(steps > 0);
        Assert.Equal(0, kernel.LiveMappedBytes);
        Assert.True(calls > 20, $"only {calls} mapping calls were made");
    }

    [LinuxTheory]
    [MemberData(nameof(MapErrnos))]
    public void A_thread_local_allocator_reports_its_fallback_s_refusals_as_exhaustion_and_recovers(int errno)
    {
        var kernel = new FakeLinuxSystemCalls();
        using var fallback = new MemoryMapAllocator(new MemoryMapSource(null, kernel), registerBlocks: true);
        using (var allocator = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { Fallback = fallback }))
        {
            kernel.RefuseAt("mmap", 1, errno);
            Assert.False(allocator.TryAllocate(1 << 20, 16, out _));

            byte* large = allocator.Allocate(1 << 20, 16);
            large[0] = 3;
            kernel.Refuse = call => call is "mremap" or "mremap(in place)" ? errno : 0;
            Assert.False(allocator.TryGrowingReallocate(large, 1 << 20, 4 << 20, 16, out _));
            kernel.Refuse = null;
            Assert.True(allocator.Owns(large));
            Assert.Equal(3, large[0]);

            byte* grown = allocator.GrowingReallocate(large, 1 << 20, 4 << 20, 16);
            Assert.Equal(3, grown[0]);
            allocator.Deallocate(grown, 4 << 20, 16);
        }

        Assert.Equal(0, fallback.LiveBlockCount);
        Assert.Equal(0, kernel.LiveMappedBytes);
    }
}
