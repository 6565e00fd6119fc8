using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

public unsafe class MemoryMapSourceTests
{
    private const int MAP_PRIVATE = 0x02;
    private const int MAP_ANONYMOUS = 0x20;
    private const int MAP_LOCKED = 0x2000;
    private const int MAP_NORESERVE = 0x4000;
    private const int MAP_POPULATE = 0x8000;
    private const int MAP_HUGETLB = 0x40000;
    private const int MADV_HUGEPAGE = 14;
    private const int MADV_DONTDUMP = 16;

    private static readonly nuint PageSize = (nuint)Environment.SystemPageSize;

    // 64 GiB: mapped without swap reservation and never touched, it costs nothing, and nothing else in the process maps that much.
    private static readonly nuint HugeRegion = (nuint)64 << 30;

    public static TheoryData<string> PolicyNames => ["Default", "Preferred{0}", "Bind{0}", "Interleave{0}", "Local"];

    [Fact]
    public void Default_map_flags_are_private_anonymous_noreserve_and_never_locked_or_populated()
    {
        int flags = MemoryMapSource.ComputeMapFlags(MemoryMapSourceOptions.Default);

        Assert.Equal(MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, flags);
        Assert.Equal(0, flags & (MAP_LOCKED | MAP_POPULATE));
    }

    [Fact]
    public void Lock_and_prefault_never_become_map_locked_or_map_populate()
    {
        var options = new MemoryMapSourceOptions { Lock = true, Prefault = true, NoReserve = false };

        Assert.Equal(MAP_PRIVATE | MAP_ANONYMOUS, MemoryMapSource.ComputeMapFlags(options));
    }

    [Theory]
    [InlineData(ExplicitHugePages.Size2MiB, (21 << 26) | 0x40000, 2u << 20)]
    [InlineData(ExplicitHugePages.Size1GiB, (30 << 26) | 0x40000, 1u << 30)]
    public void Explicit_huge_pages_encode_their_size_in_the_map_flags_W_MM2(ExplicitHugePages hugePages, int hugeFlags, uint granularity)
    {
        var options = new MemoryMapSourceOptions { ExplicitHugePages = hugePages };
        int flags = MemoryMapSource.ComputeMapFlags(options);

        // No MAP_NORESERVE with MAP_HUGETLB: unreserved huge pages fail with SIGBUS on first touch, not in mmap.
        Assert.Equal(MAP_PRIVATE | MAP_ANONYMOUS | hugeFlags, flags);
        Assert.Equal((nuint)granularity, MemoryMapSource.ComputeGranularity(hugePages));

        // W-MM2: explicit huge pages are MAP_HUGETLB only, never the transparent-huge-page advice
        // (which is applied, after the required advice, only when TransparentHugePages asks for it).
        Assert.DoesNotContain(MADV_HUGEPAGE, MemoryMapSource.ComputeRequiredAdvice(options));
        Assert.False(options.TransparentHugePages);
        Assert.Equal(0, MemoryMapSource.ComputeMapFlags(MemoryMapSourceOptions.Default) & MAP_HUGETLB);
    }

    [LinuxFact]
    public void Advice_values_are_separate_calls_never_or_ed_W_MM1()
    {
        // W-MM1: the seed OR-ed MADV_DONTDUMP (16) and MADV_HUGEPAGE (14) into the invalid advice 30.
        var both = new MemoryMapSourceOptions { TransparentHugePages = true, ExcludeFromCoreDumps = true };

        Assert.Equal([FakeLinuxSystemCalls.AdviceName(MADV_DONTDUMP), FakeLinuxSystemCalls.AdviceName(MADV_HUGEPAGE)], AdviceCallsOfOneRegion(both));
        Assert.Equal([FakeLinuxSystemCalls.AdviceName(MADV_DONTDUMP)], AdviceCallsOfOneRegion(MemoryMapSourceOptions.Default));
        Assert.Empty(AdviceCallsOfOneRegion(new MemoryMapSourceOptions { ExcludeFromCoreDumps = false }));
    }

    [LinuxFact]
    public void Obtain_makes_one_madvise_call_per_advice_W_MM1()
    {
        // The real path: the system calls the source makes for one region, recorded through stand-in
        // system calls that refuse nothing (each call is then made for real).
        var sourceCalls = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(new MemoryMapSourceOptions { TransparentHugePages = true, ExcludeFromCoreDumps = true }, sourceCalls);
        var steps = new List<string>();
        sourceCalls.Refuse = step =>
        {
            steps.Add(step);
            return 0;
        };

        byte* region = source.Obtain(PageSize);
        source.Release(region, PageSize);

        Assert.Equal(["madvise(MADV_DONTDUMP)", "madvise(MADV_HUGEPAGE)"], steps.Where(step => step.StartsWith("madvise", StringComparison.Ordinal)));
    }

    [Fact]
    public void Only_the_core_dump_advice_is_required_the_huge_page_advice_is_optional()
    {
        var both = new MemoryMapSourceOptions { TransparentHugePages = true, ExcludeFromCoreDumps = true };

        Assert.Equal([MADV_DONTDUMP], MemoryMapSource.ComputeRequiredAdvice(both));
        Assert.Empty(MemoryMapSource.ComputeRequiredAdvice(new MemoryMapSourceOptions { TransparentHugePages = true, ExcludeFromCoreDumps = false }));
        Assert.DoesNotContain(MADV_HUGEPAGE, MemoryMapSource.ComputeRequiredAdvice(both));
    }

    [Fact]
    public void Strict_policy_moves_and_checks_pages()
    {
        Assert.Equal(0u, MemoryMapSource.ComputeMbindFlags(MemoryMapSourceOptions.Default));
        Assert.Equal(3u, MemoryMapSource.ComputeMbindFlags(new MemoryMapSourceOptions { StrictNumaPolicy = true }));
    }

    [Fact]
    public void Options_that_contradict_each_other_are_rejected_naming_the_setting()
    {
        var both = new MemoryMapSourceOptions { TransparentHugePages = true, ExplicitHugePages = ExplicitHugePages.Size2MiB };
        var error = Assert.Throws<ArgumentException>(both.Validate);
        Assert.Contains("TransparentHugePages", error.Message, StringComparison.Ordinal);
        Assert.Contains("ExplicitHugePages", error.Message, StringComparison.Ordinal);

        var undefined = Assert.Throws<ArgumentException>(new MemoryMapSourceOptions { ExplicitHugePages = (ExplicitHugePages)7 }.Validate);
        Assert.Contains("ExplicitHugePages", undefined.Message, StringComparison.Ordinal);

        var noPolicy = Assert.Throws<ArgumentException>(new MemoryMapSourceOptions { NumaPolicy = null! }.Validate);
        Assert.Contains("NumaPolicy", noPolicy.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => MemorySource.CreateDefault(both));
    }

    [Fact]
    public void Default_options_are_documented_values()
    {
        var options = MemoryMapSourceOptions.Default;
        Assert.Equal(NumaPolicy.Default, options.NumaPolicy);
        Assert.False(options.StrictNumaPolicy);
        Assert.False(options.TransparentHugePages);
        Assert.Equal(ExplicitHugePages.None, options.ExplicitHugePages);
        Assert.False(options.Prefault);
        Assert.False(options.Lock);
        Assert.True(options.ExcludeFromCoreDumps);
        Assert.True(options.NoReserve);
    }

    [Fact]
    public void Default_source_is_the_memory_map_source_where_supported()
    {
        var source = MemorySource.CreateDefault();

        if (MemoryMapSource.IsSupported)
        {
            Assert.IsType<MemoryMapSource>(source);
            Assert.Null(MemoryMapSource.UnsupportedReason);
        }
        else
        {
            // Elsewhere: the portable fallback, never a crash (architecture decision 9).
            Assert.IsType<NativeMemorySource>(source);
            Assert.NotNull(MemoryMapSource.UnsupportedReason);
        }

        byte* region = source.Obtain(1);
        region[0] = 1;
        source.Release(region, 1);
    }

    [LinuxTheory]
    [MemberData(nameof(PolicyNames))]
    public void Obtain_and_release_succeed_with_each_policy_and_pages_land_on_node_0(string policyName)
    {
        var policy = ParsePolicy(policyName);
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = policy });
        nuint size = 16 * PageSize;

        byte* region = source.Obtain(size);
        new Span<byte>(region, (int)size).Fill(0xA5);

        Assert.True(source.NumaPolicyApplied, source.FallbackReason);
        Assert.Equal((long)size, source.MappedBytes);
        Assert.Equal(0, MemoryMapSource.GetNodeOfAddress(region));
        Assert.Equal(0, MemoryMapSource.GetNodeOfAddress(region + size - 1));
        Assert.Equal(policy.Mode, MemoryMapSource.GetPolicyOfAddress(region)!.Mode);

        source.Release(region, size);
        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxFact]
    public void Bind_policy_is_reported_for_the_range_by_get_mempolicy()
    {
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Bind(NumaNodeSet.Of(0)) });
        byte* region = source.Obtain(PageSize * 4);
        try
        {
            var policy = MemoryMapSource.GetPolicyOfAddress(region + PageSize);

            Assert.NotNull(policy);
            Assert.Equal(NumaPolicyMode.Bind, policy.Mode);
            Assert.Equal([0], policy.Nodes.Nodes);
        }
        finally
        {
            source.Release(region, PageSize * 4);
        }
    }

    [LinuxFact]
    public void Bind_policy_survives_growing_the_region_with_mremap()
    {
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Bind(NumaNodeSet.Of(0)) });
        nuint oldSize = PageSize * 4;
        nuint newSize = PageSize * 256;
        byte* region = source.Obtain(oldSize);
        byte* grown = source.Remap(region, oldSize, newSize);
        try
        {
            byte* tail = grown + newSize - PageSize;
            tail[0] = 1;
            var policy = MemoryMapSource.GetPolicyOfAddress(tail);

            Assert.NotNull(policy);
            Assert.Equal(NumaPolicyMode.Bind, policy.Mode);
            Assert.Equal([0], policy.Nodes.Nodes);
            Assert.Equal(0, MemoryMapSource.GetNodeOfAddress(tail));
            Assert.Equal((long)newSize, source.MappedBytes);
        }
        finally
        {
            source.Release(grown, newSize);
        }
    }

    [LinuxFact]
    public void Bind_to_a_node_set_beyond_the_first_mask_word_reaches_the_kernel_whole()
    {
        // Node 100 lives in the second mask word: the kernel must be told maxnode = 129, not 65 (W-NU1).
        var nodes = NumaNodeSet.Of(0, 100);
        Assert.Equal(129UL, nodes.MaxNode);
        Assert.Equal([1UL, 1UL << 36], nodes.MaskWords.ToArray());

        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Bind(nodes) });
        if (source.TryObtain(PageSize, out byte* region))
        {
            // A kernel built for more than 100 nodes (MAX_NUMNODES > 100) keeps the nodes it has: node 0.
            try
            {
                region[0] = 1;
                var policy = MemoryMapSource.GetPolicyOfAddress(region);
                Assert.NotNull(policy);
                Assert.Equal(NumaPolicyMode.Bind, policy.Mode);
                Assert.Contains(0, policy.Nodes.Nodes);
                Assert.Equal(0, MemoryMapSource.GetNodeOfAddress(region));
                Assert.True(source.NumaPolicyApplied, source.FallbackReason);
            }
            finally
            {
                source.Release(region, PageSize);
            }
        }
        else
        {
            // A kernel built for fewer nodes rejects a mask with bits beyond MAX_NUMNODES set: EINVAL, named clearly.
            Assert.True(region == null);
            Assert.Contains("mbind", source.LastFailure, StringComparison.Ordinal);
            Assert.Contains("EINVAL", source.LastFailure, StringComparison.Ordinal);
            Assert.Equal(0, source.MappedBytes);
            Assert.True(source.NumaPolicyApplied, "a real error is not a reason to drop the policy");
        }
    }

    [LinuxFact]
    public void Unmapped_range_has_no_node_or_policy()
    {
        // The second page of the address space lies below vm.mmap_min_addr and is never mapped;
        // a region just released would not do, the runtime may map its next allocation there.
        byte* region = (byte*)PageSize;

        Assert.Null(MemoryMapSource.GetNodeOfAddress(region));
        Assert.Null(MemoryMapSource.GetPolicyOfAddress(region));
    }

    [LinuxFact]
    public void Binding_to_a_node_the_machine_lacks_fails_cleanly_with_the_kernel_error()
    {
        int missing = NumaTopology.Current.Nodes[^1].Id + 1;
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Bind(NumaNodeSet.Of(missing)) });

        Assert.False(source.TryObtain(PageSize, out byte* region));
        Assert.True(region == null);
        var error = Assert.Throws<MemorySourceExhaustedException>(() => source.Obtain(PageSize));
        Assert.Contains("mbind", error.Message, StringComparison.Ordinal);
        Assert.Contains("EINVAL", error.Message, StringComparison.Ordinal);
        Assert.Equal(0, source.MappedBytes);
        Assert.True(source.NumaPolicyApplied, "a real error is not a reason to drop the policy");
    }

    [LinuxTheory]
    [InlineData(38)]
    [InlineData(1)]
    public void Refused_mbind_degrades_to_no_policy_and_says_so_once(int errno)
    {
        var warnings = new List<string>();
        var sourceCalls = new FakeLinuxSystemCalls
        {
            Refuse = step => step == "mbind" ? errno : 0,
        };
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Bind(NumaNodeSet.Of(0)), Warning = warnings.Add }, sourceCalls);
        Assert.Equal(0, source.MappedNode);

        byte* first = source.Obtain(PageSize);
        byte* second = source.Obtain(PageSize);

        Assert.False(source.NumaPolicyApplied);
        Assert.Contains("mbind", source.FallbackReason, StringComparison.Ordinal);
        Assert.Contains(errno == 38 ? "ENOSYS" : "EPERM", source.FallbackReason, StringComparison.Ordinal);
        Assert.Single(warnings);
        Assert.Equal(-1, source.MappedNode);
        Assert.Equal(NumaPolicyMode.Default, MemoryMapSource.GetPolicyOfAddress(first)!.Mode);
        source.Release(first, PageSize);
        source.Release(second, PageSize);
    }

    [LinuxFact]
    public void Both_advice_calls_reach_the_kernel_W_MM1()
    {
        // W-MM1: with the seed's OR-ed advice (30) madvise failed; here the VMA carries both flags.
        var source = new MemoryMapSource(new MemoryMapSourceOptions { TransparentHugePages = true, ExcludeFromCoreDumps = true });
        byte* region = source.Obtain(4 * PageSize);
        try
        {
            string[] flags = VmFlagsOf(region);

            Assert.Contains("dd", flags); // VM_DONTDUMP
            Assert.Contains("hg", flags); // VM_HUGEPAGE
            Assert.DoesNotContain("lo", flags); // not locked by default
        }
        finally
        {
            source.Release(region, 4 * PageSize);
        }
    }

    [LinuxFact]
    public void Regions_can_stay_in_core_dumps_when_asked()
    {
        var source = new MemoryMapSource(new MemoryMapSourceOptions { ExcludeFromCoreDumps = false });
        byte* region = source.Obtain(PageSize);

        Assert.DoesNotContain("dd", VmFlagsOf(region));
        source.Release(region, PageSize);
    }

    [LinuxFact]
    public void Explicit_huge_pages_fail_cleanly_without_reserved_pages()
    {
        var source = new MemoryMapSource(new MemoryMapSourceOptions { ExplicitHugePages = ExplicitHugePages.Size2MiB });
        Assert.Equal((nuint)(2 << 20), source.Granularity);

        if (source.TryObtain(100, out byte* region))
        {
            // Huge pages are reserved on this machine: the request was rounded to one huge page.
            Assert.True(Allocator.IsAligned((nuint)region, 2u << 20));
            Assert.Equal(2L << 20, source.MappedBytes);
            region[(2 << 20) - 1] = 1;
            source.Release(region, 100);
            return;
        }

        var error = Assert.Throws<MemorySourceExhaustedException>(() => source.Obtain(100));
        Assert.Contains("mmap failed", error.Message, StringComparison.Ordinal);
        Assert.Contains("huge pages", error.Message, StringComparison.Ordinal);
        Assert.Equal(error.Message, $"MemoryMapSource could not provide 100 bytes: {source.LastFailure}");
        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxFact]
    public void Transparent_huge_page_advice_succeeds()
    {
        var source = new MemoryMapSource(new MemoryMapSourceOptions { TransparentHugePages = true });
        nuint size = 4u << 20;

        byte* region = source.ObtainAligned(size, 2u << 20);
        region[0] = 1;

        bool thpAvailable = File.Exists("/sys/kernel/mm/transparent_hugepage/enabled")
            && !File.ReadAllText("/sys/kernel/mm/transparent_hugepage/enabled").Contains("[never]", StringComparison.Ordinal);
        if (thpAvailable)
        {
            Assert.True(source.TransparentHugePagesApplied, source.FallbackReason);
            Assert.Null(source.FallbackReason);
        }

        source.Release(region, size);
    }

    [LinuxFact]
    public void Lock_succeeds_within_the_limit_and_its_failure_is_reported_not_fatal()
    {
        var warnings = new List<string>();
        var sourceCalls = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(new MemoryMapSourceOptions { Lock = true, Warning = warnings.Add }, sourceCalls);

        byte* locked = source.Obtain(4 * PageSize);
        Assert.Equal(0, source.LockFailureCount);
        Assert.Null(source.LastLockFailure);
        Assert.Equal(4, MemoryMapSource.CountResidentPages(locked, 4 * PageSize));
        Assert.Contains("lo", VmFlagsOf(locked)); // VM_LOCKED
        source.Release(locked, 4 * PageSize);

        // This machine runs tests as root (CAP_IPC_LOCK ignores RLIMIT_MEMLOCK), so the refusal is simulated.
        sourceCalls.Refuse = step => step == "mlock" ? 12 : 0;
        byte* unlocked = source.Obtain(PageSize);
        unlocked[0] = 7;

        Assert.Equal(1, source.LockFailureCount);
        Assert.Contains("ENOMEM", source.LastLockFailure, StringComparison.Ordinal);
        Assert.Contains("RLIMIT_MEMLOCK", source.LastLockFailure, StringComparison.Ordinal);
        Assert.Equal([source.LastLockFailure!], warnings);
        source.Release(unlocked, PageSize);
    }

    [LinuxFact]
    public void Prefault_falls_back_to_touching_pages_when_the_kernel_lacks_populate_write()
    {
        // Kernels before 5.14 answer MADV_POPULATE_WRITE with EINVAL.
        var sourceCalls = new FakeLinuxSystemCalls
        {
            Refuse = step => step == "madvise(MADV_POPULATE_WRITE)" ? 22 : 0,
        };
        var source = new MemoryMapSource(new MemoryMapSourceOptions { Prefault = true }, sourceCalls);

        byte* region = source.Obtain(16 * PageSize);

        Assert.Equal(16, MemoryMapSource.CountResidentPages(region, 16 * PageSize));
        source.Release(region, 16 * PageSize);
    }

    [LinuxFact]
    public void Failed_populate_unmaps_the_region_and_reports_the_error()
    {
        var sourceCalls = new FakeLinuxSystemCalls
        {
            Refuse = step => step == "madvise(MADV_POPULATE_WRITE)" ? 12 : 0,
        };
        var source = new MemoryMapSource(new MemoryMapSourceOptions { Prefault = true }, sourceCalls);

        Assert.False(source.TryObtain(PageSize, out _));

        Assert.Contains("MADV_POPULATE_WRITE", source.LastFailure, StringComparison.Ordinal);
        Assert.Contains("ENOMEM", source.LastFailure, StringComparison.Ordinal);
        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxFact]
    public void Throwing_warning_callback_releases_the_region()
    {
        var sourceCalls = new FakeLinuxSystemCalls
        {
            Refuse = step => step == "mlock" ? 12 : 0,
        };
        var source = new MemoryMapSource(new MemoryMapSourceOptions { Lock = true, Warning = _ => throw new InvalidOperationException("callback") }, sourceCalls);

        Assert.Throws<InvalidOperationException>(() => source.Obtain(PageSize));
        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxFact]
    public void Prefault_makes_every_page_resident_after_obtain()
    {
        var prefaulted = new MemoryMapSource(new MemoryMapSourceOptions { Prefault = true, NumaPolicy = NumaPolicy.Bind(NumaNodeSet.Of(0)) });
        var lazy = new MemoryMapSource();
        nuint size = 64 * PageSize;

        byte* populated = prefaulted.Obtain(size);
        byte* untouched = lazy.Obtain(size);

        Assert.Equal(64, MemoryMapSource.CountResidentPages(populated, size));
        Assert.Equal(0, MemoryMapSource.CountResidentPages(untouched, size));
        Assert.Equal(0, MemoryMapSource.GetNodeOfAddress(populated + (size / 2)));
        prefaulted.Release(populated, size);
        lazy.Release(untouched, size);
    }

    [LinuxFact]
    public void Sizes_are_rounded_to_pages_and_counted_per_node()
    {
        var bound = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Preferred(0) });
        var unbound = new MemoryMapSource();

        byte* a = bound.Obtain(1);
        byte* b = unbound.Obtain(PageSize + 1);

        Assert.Equal((long)PageSize, bound.MappedBytes);
        Assert.Equal(new Dictionary<int, long> { [0] = (long)PageSize }, bound.GetMappedBytesByNode());
        Assert.Equal(new Dictionary<int, long> { [-1] = 2 * (long)PageSize }, unbound.GetMappedBytesByNode());
        var process = MemoryMapSource.GetProcessMappedBytesByNode();
        Assert.True(process[0] >= (long)PageSize);
        Assert.True(process[-1] >= 2 * (long)PageSize);

        bound.Release(a, 1);
        unbound.Release(b, PageSize + 1);
        Assert.Equal(0, bound.MappedBytes);
        Assert.Equal(0, unbound.MappedBytes);
    }

    [LinuxFact]
    public void Aligned_obtain_returns_an_aligned_region_and_maps_only_its_size()
    {
        var source = new MemoryMapSource();
        nuint alignment = 1u << 20;

        byte* region = source.ObtainAligned(3 * PageSize, alignment);

        Assert.True(Allocator.IsAligned((nuint)region, alignment));
        Assert.Equal(3 * (long)PageSize, source.MappedBytes);
        region[(3 * PageSize) - 1] = 1;
        source.Release(region, 3 * PageSize);
    }

    [LinuxFact]
    public void Remap_grows_and_shrinks_keeping_contents()
    {
        var source = new MemoryMapSource();
        byte* region = source.Obtain(2 * PageSize);
        FillPattern(region, 2 * PageSize);

        byte* grown = source.Remap(region, 2 * PageSize, 256 * PageSize);
        AssertPattern(grown, 2 * PageSize);
        grown[(256 * PageSize) - 1] = 3;
        Assert.Equal(256 * (long)PageSize, source.MappedBytes);

        byte* shrunk = source.Remap(grown, 256 * PageSize, PageSize);
        AssertPattern(shrunk, PageSize);
        Assert.Equal((long)PageSize, source.MappedBytes);

        Assert.True(source.TryResizeInPlace(shrunk, PageSize, PageSize));
        source.Release(shrunk, PageSize);
        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxFact]
    public void Remap_by_copy_copies_only_the_smaller_size_W_MM4()
    {
        var source = new MemoryMapSource();
        byte* region = source.Obtain(8 * PageSize);
        FillPattern(region, 8 * PageSize);

        // W-MM4: the seed copied the old size (8 pages) into the one-page new region.
        Assert.True(source.TryRemapByCopy(region, 8 * PageSize, PageSize, out byte* shrunk, out string? failure), failure);
        AssertPattern(shrunk, PageSize);
        Assert.Equal((long)PageSize, source.MappedBytes);

        Assert.True(source.TryRemapByCopy(shrunk, PageSize, 4 * PageSize, out byte* grown, out failure), failure);
        AssertPattern(grown, PageSize);
        Assert.Equal(4 * (long)PageSize, source.MappedBytes);
        source.Release(grown, 4 * PageSize);
    }

    [LinuxFact]
    public void Release_rejects_bad_regions_with_a_clear_message()
    {
        var source = new MemoryMapSource();

        Assert.Throws<ArgumentNullException>(() => source.Release(null, PageSize));
        Assert.Throws<ArgumentOutOfRangeException>(() => source.Release((byte*)PageSize, 0));
        var unaligned = Assert.Throws<ArgumentException>(() => source.Release((byte*)(PageSize + 8), PageSize));
        Assert.Contains("aligned", unaligned.Message, StringComparison.Ordinal);

        // An address in the kernel half: munmap says EINVAL.
        byte* kernelHalf = (byte*)(1UL << 63);
        var einval = Assert.Throws<ArgumentException>(() => source.Release(kernelHalf, PageSize));
        Assert.Contains("munmap failed with EINVAL", einval.Message, StringComparison.Ordinal);
        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxFact]
    public void Obtain_rejects_zero_and_oversized_requests()
    {
        var source = new MemoryMapSource();

        Assert.Throws<ArgumentOutOfRangeException>(() => source.Obtain(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => source.TryObtain(nuint.MaxValue, out _));
        Assert.Throws<ArgumentException>(() => source.ObtainAligned(PageSize, 3));
    }

    [LinuxFact]
    public void Obtain_and_release_from_four_threads_keep_the_counters_exact()
    {
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Local });

        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, worker =>
        {
            for (int i = 0; i < 100; i++)
            {
                nuint size = (nuint)(((i % 7) + 1) * 1000);
                byte* region = source.Obtain(size);
                new Span<byte>(region, (int)size).Fill((byte)worker);
                Assert.True(new Span<byte>(region, (int)size).IndexOfAnyExcept((byte)worker) < 0);
                source.Release(region, size);
            }
        });

        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxTheory]
    [InlineData(22)] // EINVAL: a kernel built without transparent huge pages
    [InlineData(1)] // EPERM: a sandbox that filters the advice
    public void Refused_transparent_huge_page_advice_degrades_once_and_the_source_keeps_working(int errno)
    {
        var warnings = new List<string>();
        int advised = 0;
        var sourceCalls = new FakeLinuxSystemCalls
        {
            Refuse = step =>
            {
                if (step != "madvise(MADV_HUGEPAGE)")
                {
                    return 0;
                }

                advised++;
                return errno;
            },
        };
        var source = new MemoryMapSource(new MemoryMapSourceOptions { TransparentHugePages = true, Warning = warnings.Add }, sourceCalls);
        Assert.True(source.TransparentHugePagesApplied);

        byte* first = source.Obtain(4 * PageSize);
        byte* second = source.Obtain(PageSize + 1);
        FillPattern(first, 4 * PageSize);
        FillPattern(second, 2 * PageSize);

        Assert.False(source.TransparentHugePagesApplied);
        Assert.Equal(1, advised); // refused once, never asked again
        Assert.Contains("madvise(MADV_HUGEPAGE)", source.FallbackReason, StringComparison.Ordinal);
        Assert.Contains(errno == 22 ? "EINVAL" : "EPERM", source.FallbackReason, StringComparison.Ordinal);
        Assert.Equal([source.FallbackReason!], warnings);
        Assert.DoesNotContain("hg", VmFlagsOf(second)); // the advice was not given to later regions
        Assert.Contains("dd", VmFlagsOf(second)); // the required advice still was
        Assert.True(source.NumaPolicyApplied);
        Assert.Null(source.LastFailure);
        Assert.Equal(6 * (long)PageSize, source.MappedBytes);
        AssertPattern(first, 4 * PageSize);
        AssertPattern(second, 2 * PageSize);

        source.Release(first, 4 * PageSize);
        source.Release(second, PageSize + 1);
        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxFact]
    public void Refused_policy_and_refused_huge_page_advice_are_both_reported()
    {
        var warnings = new List<string>();
        var sourceCalls = new FakeLinuxSystemCalls
        {
            Refuse = step => step is "madvise(MADV_HUGEPAGE)" or "mbind" ? 38 : 0,
        };
        var source = new MemoryMapSource(new MemoryMapSourceOptions { TransparentHugePages = true, NumaPolicy = NumaPolicy.Preferred(0), Warning = warnings.Add }, sourceCalls);

        byte* region = source.Obtain(PageSize);

        Assert.Equal(2, warnings.Count);
        Assert.Equal($"{warnings[1]}; {warnings[0]}", source.FallbackReason); // the policy first, as documented
        Assert.Contains("mbind failed with ENOSYS", warnings[1], StringComparison.Ordinal);
        Assert.Contains("madvise(MADV_HUGEPAGE) failed with ENOSYS", warnings[0], StringComparison.Ordinal);
        source.Release(region, PageSize);
    }

    [LinuxFact]
    public void Throwing_warning_for_a_refused_huge_page_advice_unmaps_the_region_and_degrades_anyway()
    {
        int warnings = 0;
        var options = new MemoryMapSourceOptions
        {
            TransparentHugePages = true,
            Warning = _ =>
            {
                warnings++;
                throw new InvalidOperationException("callback");
            },
        };
        var source = new MemoryMapSource(options, new FakeLinuxSystemCalls { Refuse = step => step == "madvise(MADV_HUGEPAGE)" ? 22 : 0 });
        ulong hugeBytesBefore = HugeWritableBytes();

        Assert.Throws<InvalidOperationException>(() => source.Obtain(HugeRegion));

        Assert.Equal(hugeBytesBefore, HugeWritableBytes());
        Assert.Equal(0, source.MappedBytes);
        Assert.False(source.TransparentHugePagesApplied);
        byte* region = source.Obtain(PageSize); // degraded already: no second warning to throw
        Assert.Equal(1, warnings);
        source.Release(region, PageSize);
    }

    [LinuxTheory]
    [InlineData(12)]
    [InlineData(22)]
    public void Refused_core_dump_advice_fails_the_obtain_with_its_errno_and_leaves_nothing_mapped(int errno)
    {
        // The core-dump advice is the one required advice (ComputeRequiredAdvice): its refusal is not degraded.
        Assert.Equal([MADV_DONTDUMP], MemoryMapSource.ComputeRequiredAdvice(MemoryMapSourceOptions.Default));
        var sourceCalls = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(new MemoryMapSourceOptions { TransparentHugePages = true }, sourceCalls);
        ulong hugeBytesBefore = HugeWritableBytes();
        ulong hugeBytesWhileAdvised = 0;
        sourceCalls.Refuse = step =>
        {
            if (step == "madvise(MADV_DONTDUMP)")
            {
                hugeBytesWhileAdvised = HugeWritableBytes();
                return errno;
            }

            return 0;
        };

        var error = Assert.Throws<MemorySourceExhaustedException>(() => source.Obtain(HugeRegion));

        string name = errno == 12 ? "ENOMEM" : "EINVAL";
        Assert.Contains($"madvise(MADV_DONTDUMP) failed with {name} ({errno})", error.Message, StringComparison.Ordinal);
        Assert.Equal($"MemoryMapSource could not provide {HugeRegion} bytes: {source.LastFailure}", error.Message);
        Assert.True(hugeBytesWhileAdvised >= hugeBytesBefore + HugeRegion); // the region was mapped when the advice was refused...
        Assert.Equal(hugeBytesBefore, HugeWritableBytes()); // ...and is unmapped again
        Assert.Equal(0, source.MappedBytes);
        Assert.False(source.TryObtain(PageSize, out byte* region));
        Assert.True(region == null);
        Assert.Equal(0, source.MappedBytes);
        Assert.Null(source.FallbackReason); // a required step fails the request instead of degrading the source
        Assert.True(source.TransparentHugePagesApplied);

        sourceCalls.Refuse = null;
        region = source.Obtain(PageSize);
        Assert.Contains("dd", VmFlagsOf(region));
        source.Release(region, PageSize);
    }

    [LinuxFact]
    public void Remap_by_copy_keeps_the_contents_serves_the_new_size_and_unmaps_the_old_region()
    {
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Preferred(0) });
        ulong hugeBytesBefore = HugeWritableBytes();
        byte* huge = source.Obtain(HugeRegion);
        FillPattern(huge, 3 * PageSize);
        Assert.True(HugeWritableBytes() >= hugeBytesBefore + HugeRegion);

        // Shrinking: the old size is the larger, only the new size is copied (W-MM4), the old region goes.
        Assert.True(source.TryRemapByCopy(huge, HugeRegion, 5 * PageSize, out byte* small, out string? failure), failure);
        Assert.Null(failure);
        AssertPattern(small, 3 * PageSize);
        Assert.True(new Span<byte>(small + (3 * PageSize), (int)(2 * PageSize)).IndexOfAnyExcept((byte)0) < 0);
        Assert.Equal(hugeBytesBefore, HugeWritableBytes());
        Assert.Equal(5 * (long)PageSize, source.MappedBytes);
        Assert.Equal(new Dictionary<int, long> { [0] = 5 * (long)PageSize }, source.GetMappedBytesByNode());

        // Growing: the old contents come along and the region is usable to its new size.
        FillPattern(small, 5 * PageSize);
        Assert.True(source.TryRemapByCopy(small, 5 * PageSize, 300 * PageSize, out byte* grown, out failure), failure);
        Assert.True(grown != small);
        AssertPattern(grown, 5 * PageSize);
        new Span<byte>(grown + (5 * PageSize), (int)(295 * PageSize)).Fill(0xA5);
        Assert.Equal(0xA5, grown[(300 * PageSize) - 1]);
        Assert.Equal(300 * (long)PageSize, source.MappedBytes);
        Assert.Equal(new Dictionary<int, long> { [0] = 300 * (long)PageSize }, source.GetMappedBytesByNode());
        Assert.Equal(NumaPolicy.Preferred(0), MemoryMapSource.GetPolicyOfAddress(grown + (299 * PageSize)));
        Assert.Contains("dd", VmFlagsOf(grown));

        source.Release(grown, 300 * PageSize);
        Assert.Equal(0, source.MappedBytes);
    }

    [LinuxFact]
    public void Failed_remap_by_copy_leaves_the_old_region_intact_and_accounted()
    {
        var sourceCalls = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Preferred(0) }, sourceCalls);
        byte* region = source.Obtain(4 * PageSize);
        FillPattern(region, 4 * PageSize);

        // The new region cannot be mapped...
        sourceCalls.Refuse = step => step == "mmap" ? 12 : 0;
        Assert.False(source.TryRemapByCopy(region, 4 * PageSize, 64 * PageSize, out byte* moved, out string? failure));
        Assert.True(moved == null);
        Assert.StartsWith("mmap failed with ENOMEM (12)", failure, StringComparison.Ordinal);
        Assert.Equal(failure, source.LastFailure);
        AssertRegionKept();

        // ...or is mapped and then refused a required step: it is unmapped again, the old one stays.
        ulong hugeBytesBefore = HugeWritableBytes();
        sourceCalls.Refuse = step => step == "madvise(MADV_DONTDUMP)" ? 22 : 0;
        Assert.False(source.TryRemapByCopy(region, 4 * PageSize, HugeRegion, out moved, out failure));
        Assert.True(moved == null);
        Assert.StartsWith("madvise(MADV_DONTDUMP) failed with EINVAL", failure, StringComparison.Ordinal);
        Assert.Equal(hugeBytesBefore, HugeWritableBytes());
        AssertRegionKept();

        sourceCalls.Refuse = null;
        source.Release(region, 4 * PageSize);
        Assert.Equal(0, source.MappedBytes);

        void AssertRegionKept()
        {
            AssertPattern(region, 4 * PageSize);
            nuint last = (4 * PageSize) - 1;
            region[last] = (byte)(last * 31 % 251);
            Assert.Equal(4 * (long)PageSize, source.MappedBytes);
            Assert.Equal(new Dictionary<int, long> { [0] = 4 * (long)PageSize }, source.GetMappedBytesByNode());
            Assert.Equal(NumaPolicy.Preferred(0), MemoryMapSource.GetPolicyOfAddress(region));
        }
    }

    [LinuxFact]
    public void Refused_mremap_of_an_explicit_huge_page_region_falls_back_to_copying()
    {
        // Kernels before 5.16 cannot mremap hugetlb mappings and later ones cannot grow them: EINVAL.
        // With no huge pages reserved here, a 2 MiB-aligned regular region stands in for the huge page,
        // and the copy's mapping is refused too, so the test sees which path was taken.
        nuint hugePage = 2u << 20;
        var regularCalls = new FakeLinuxSystemCalls();
        var regular = new MemoryMapSource(null, regularCalls);
        byte* region = regular.ObtainAligned(hugePage, hugePage);
        FillPattern(region, hugePage);
        var steps = new List<string>();
        var hugeCalls = new FakeLinuxSystemCalls
        {
            Refuse = step =>
            {
                steps.Add(step);
                return step switch { "mremap" => 22, "mmap" => 12, _ => 0 };
            },
        };
        var huge = new MemoryMapSource(new MemoryMapSourceOptions { ExplicitHugePages = ExplicitHugePages.Size2MiB }, hugeCalls);

        Assert.False(huge.TryRemap(region, hugePage, 2 * hugePage, out byte* moved));

        Assert.True(moved == null);
        Assert.Equal(["mremap", "mmap"], steps); // refused mremap, then the copy's new mapping
        Assert.StartsWith("mmap failed with ENOMEM", huge.LastFailure, StringComparison.Ordinal);
        Assert.Contains("huge pages need pages reserved", huge.LastFailure, StringComparison.Ordinal);
        var error = Assert.Throws<MemorySourceExhaustedException>(() => huge.Remap(region, hugePage, 2 * hugePage));
        Assert.Contains("mmap failed", error.Message, StringComparison.Ordinal);
        Assert.Equal(0, huge.MappedBytes);

        // Another errno, or a regular source, gets no copy: the mremap refusal is the answer.
        steps.Clear();
        hugeCalls.Refuse = step =>
        {
            steps.Add(step);
            return step == "mremap" ? 12 : 0;
        };
        Assert.False(huge.TryRemap(region, hugePage, 2 * hugePage, out _));
        Assert.Equal(["mremap"], steps);
        Assert.StartsWith("mremap failed with ENOMEM", huge.LastFailure, StringComparison.Ordinal);

        steps.Clear();
        regularCalls.Refuse = step =>
        {
            steps.Add(step);
            return step == "mremap" ? 22 : 0;
        };
        Assert.False(regular.TryRemap(region, hugePage, 2 * hugePage, out _));
        Assert.Equal(["mremap"], steps);
        Assert.StartsWith("mremap failed with EINVAL", regular.LastFailure, StringComparison.Ordinal);

        AssertPattern(region, hugePage);
        Assert.Equal((long)hugePage, regular.MappedBytes);
        regularCalls.Refuse = null;
        regular.Release(region, hugePage);
    }

    // Skipped where no huge pages are reserved (vm.nr_hugepages): Explicit_huge_pages_fail_cleanly_without_reserved_pages
    // covers such a machine. Three pages: the grown region (two) is obtained before the old one (one) is released.
    [HugePagesFact(3)]
    public void Explicit_huge_page_region_grows_by_copy_where_pages_are_reserved()
    {
        nuint hugePage = 2u << 20;
        var sourceCalls = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(new MemoryMapSourceOptions { ExplicitHugePages = ExplicitHugePages.Size2MiB, NumaPolicy = NumaPolicy.Preferred(0) }, sourceCalls);
        Assert.True(source.TryObtain(hugePage, out byte* region), $"huge pages are reserved, yet: {source.LastFailure}");

        FillPattern(region, hugePage);
        int mremaps = 0;
        sourceCalls.Refuse = step =>
        {
            if (step != "mremap")
            {
                return 0;
            }

            mremaps++;
            return 22; // what 6.x kernels answer to growing a hugetlb mapping
        };

        byte* grown = source.Remap(region, hugePage, 2 * hugePage);

        Assert.Equal(1, mremaps);
        AssertPattern(grown, hugePage);
        grown[(2 * hugePage) - 1] = 1;
        Assert.Equal(2 * (long)hugePage, source.MappedBytes);
        Assert.Equal(new Dictionary<int, long> { [0] = 2 * (long)hugePage }, source.GetMappedBytesByNode());
        Assert.Contains("ht", VmFlagsOf(grown)); // VM_HUGETLB

        sourceCalls.Refuse = null;
        source.Release(grown, 2 * hugePage);
        Assert.Equal(0, source.MappedBytes);
    }

    // The madvise calls the source makes to obtain (and release) one page with options, in order.
    private static List<string> AdviceCallsOfOneRegion(MemoryMapSourceOptions options)
    {
        var steps = new List<string>();
        var source = new MemoryMapSource(options, new FakeLinuxSystemCalls
        {
            Refuse = step =>
            {
                steps.Add(step);
                return 0;
            },
        });
        byte* region = source.Obtain(PageSize);
        source.Release(region, PageSize);
        return [.. steps.Where(step => step.StartsWith("madvise", StringComparison.Ordinal))];
    }

    // The bytes of readable and writable private mappings of at least HugeRegion bytes. The runtime
    // keeps its reservations inaccessible and no other test maps that much, so the figure tells
    // whether a region whose address a test never sees is mapped (summed, not counted: adjacent
    // mappings with the same flags merge).
    private static ulong HugeWritableBytes()
    {
        ulong bytes = 0;
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            // 7f2c5c000000-7f3c5c000000 rw-p 00000000 00:00 0
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash
                && ulong.TryParse(line.AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber, null, out ulong start)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), System.Globalization.NumberStyles.HexNumber, null, out ulong end)
                && line.AsSpan(space + 1).StartsWith("rw-p", StringComparison.Ordinal)
                && end - start >= HugeRegion)
            {
                bytes += end - start;
            }
        }

        return bytes;
    }

    // The VmFlags of the mapping containing address, from /proc/self/smaps.
    private static string[] VmFlagsOf(void* address)
    {
        ulong target = (ulong)address;
        bool inside = false;
        foreach (string line in File.ReadLines("/proc/self/smaps"))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            if (dash > 0 && space > dash
                && ulong.TryParse(line.AsSpan(0, dash), System.Globalization.NumberStyles.HexNumber, null, out ulong start)
                && ulong.TryParse(line.AsSpan(dash + 1, space - dash - 1), System.Globalization.NumberStyles.HexNumber, null, out ulong end))
            {
                inside = target >= start && target < end;
            }
            else if (inside && line.StartsWith("VmFlags:", StringComparison.Ordinal))
            {
                return line["VmFlags:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            }
        }

        throw new InvalidOperationException($"No mapping contains 0x{target:X}.");
    }

    private static NumaPolicy ParsePolicy(string name) => name switch
    {
        "Default" => NumaPolicy.Default,
        "Preferred{0}" => NumaPolicy.Preferred(0),
        "Bind{0}" => NumaPolicy.Bind(NumaNodeSet.Of(0)),
        "Interleave{0}" => NumaPolicy.Interleave(NumaNodeSet.Of(0)),
        "Local" => NumaPolicy.Local,
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    private static void FillPattern(byte* region, nuint size)
    {
        for (nuint i = 0; i < size; i++)
        {
            region[i] = (byte)(i * 31 % 251);
        }
    }

    private static void AssertPattern(byte* region, nuint size)
    {
        for (nuint i = 0; i < size; i++)
        {
            if (region[i] != (byte)(i * 31 % 251))
            {
                Assert.Fail($"byte {i} lost its value");
            }
        }
    }
}
