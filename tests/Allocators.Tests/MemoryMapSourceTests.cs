using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

public unsafe partial class MemoryMapSourceTests
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
            // Elsewhere: the portable fallback, never a crash (docs/architecture.md, D9).
            Assert.IsType<NativeMemorySource>(source);
            Assert.NotNull(MemoryMapSource.UnsupportedReason);
        }

        byte* region = source.Obtain(1);
        region[0] = 1;
        source.Release(region, 1);
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
