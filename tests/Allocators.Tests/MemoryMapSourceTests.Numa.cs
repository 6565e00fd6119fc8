using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

// NUMA placement: policies reaching the kernel, their degradation when refused, and per-node accounting.
public unsafe partial class MemoryMapSourceTests
{
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
}
