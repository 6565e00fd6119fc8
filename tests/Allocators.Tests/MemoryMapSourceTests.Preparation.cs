using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

// The steps after mmap: advice, huge pages, population and locking, and how each refusal is handled.
public unsafe partial class MemoryMapSourceTests
{
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

    [LinuxFact]
    public void Resident_pages_of_an_unmapped_range_are_unknown()
    {
        // The second page of the address space lies below vm.mmap_min_addr and is never mapped.
        Assert.Null(MemoryMapSource.CountResidentPages((byte*)PageSize, PageSize));
    }
}
