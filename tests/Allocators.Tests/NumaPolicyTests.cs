using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

public class NumaPolicyTests
{
    [Theory]
    [InlineData(0, 65UL, 1)]
    [InlineData(63, 65UL, 1)]
    [InlineData(64, 129UL, 2)]
    [InlineData(100, 129UL, 2)]
    public void Node_mask_covers_the_node_and_maxnode_counts_its_bits_W_NU1_W_NU2(int node, ulong expectedMaxNode, int expectedWords)
    {
        var set = NumaNodeSet.Of(node);

        // W-NU1: the seed passed maxnode = 9 (only nodes 0-7 honoured); the kernel wants bits + 1.
        Assert.Equal(expectedMaxNode, set.MaxNode);
        Assert.Equal(expectedWords, set.MaskWords.Length);

        // W-NU2: nodes at or above 64 overflowed the seed's shift; here they land in the right word.
        Assert.Equal(1UL << (node % 64), set.MaskWords[node / 64]);
        for (int w = 0; w < set.MaskWords.Length; w++)
        {
            if (w != node / 64)
            {
                Assert.Equal(0UL, set.MaskWords[w]);
            }
        }

        Assert.True(set.Contains(node));
        Assert.Equal([node], set.Nodes);
    }

    [Fact]
    public void Empty_node_set_has_no_mask_and_zero_maxnode()
    {
        Assert.True(NumaNodeSet.Empty.IsEmpty);
        Assert.Equal(0UL, NumaNodeSet.Empty.MaxNode);
        Assert.True(NumaNodeSet.Empty.MaskWords.IsEmpty);
        Assert.Same(NumaNodeSet.Empty, NumaNodeSet.Of());
    }

    [Fact]
    public void Node_set_with_and_without_keep_the_mask_minimal()
    {
        var set = NumaNodeSet.Of(0, 100).With(5);
        Assert.Equal([0, 5, 100], set.Nodes);
        Assert.Equal(3, set.Count);
        Assert.Equal(129UL, set.MaxNode);

        var trimmed = set.Without(100);
        Assert.Equal([0, 5], trimmed.Nodes);
        Assert.Equal(65UL, trimmed.MaxNode);
        Assert.Equal(NumaNodeSet.Of(5, 0), trimmed);
        Assert.True(trimmed.Without(0).Without(5).IsEmpty);
        Assert.Same(trimmed, trimmed.Without(77));
        Assert.False(set.Contains(-1));
        Assert.False(set.Contains(4000));
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(NumaNodeSet.MaximumNodeId + 1)]
    public void Invalid_node_id_is_rejected(int node)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => NumaNodeSet.Of(node));
        Assert.Throws<ArgumentOutOfRangeException>(() => NumaNodeSet.Empty.With(node));
        Assert.Throws<ArgumentOutOfRangeException>(() => NumaPolicy.Preferred(node));
    }

    [Fact]
    public void Static_and_relative_node_ids_together_are_rejected_W_NU2()
    {
        var error = Assert.Throws<ArgumentException>(() => NumaNodeSet.Of(0).WithNodeIdMeaning(staticNodes: true, relativeNodes: true));
        Assert.Contains("MPOL_F_STATIC_NODES", error.Message, StringComparison.Ordinal);
        Assert.Contains("MPOL_F_RELATIVE_NODES", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Static_or_relative_node_ids_set_the_mode_flag()
    {
        var statics = NumaNodeSet.Of(1).WithNodeIdMeaning(staticNodes: true, relativeNodes: false);
        var relative = NumaNodeSet.Of(1).WithNodeIdMeaning(staticNodes: false, relativeNodes: true);

        Assert.Equal(2 | (1 << 15), NumaPolicy.Bind(statics).KernelMode);
        Assert.Equal(3 | (1 << 14), NumaPolicy.Interleave(relative).KernelMode);
        Assert.Equal(1, NumaPolicy.Preferred(1).KernelMode);
        Assert.NotEqual(NumaNodeSet.Of(1), statics);
        Assert.True(statics.With(2).StaticNodes);
        Assert.Equal("{1} static", statics.ToString());
    }

    [Fact]
    public void Policies_map_to_the_kernel_modes()
    {
        Assert.Equal(0, NumaPolicy.Default.KernelMode);
        Assert.Equal(4, NumaPolicy.Local.KernelMode);
        Assert.Equal(1, NumaPolicy.Preferred(NumaNodeSet.Empty).KernelMode);
        Assert.Equal(2, NumaPolicy.Bind(NumaNodeSet.Of(0)).KernelMode);
        Assert.Equal(3, NumaPolicy.Interleave(NumaNodeSet.Of(0, 1)).KernelMode);
        Assert.True(NumaPolicy.Default.Nodes.IsEmpty);
        Assert.True(NumaPolicy.Local.Nodes.IsEmpty);
    }

    [Fact]
    public void Bind_and_interleave_need_at_least_one_node()
    {
        var bind = Assert.Throws<ArgumentException>(() => NumaPolicy.Bind(NumaNodeSet.Empty));
        Assert.Equal("nodes", bind.ParamName);
        Assert.Contains("at least one node", bind.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => NumaPolicy.Interleave(NumaNodeSet.Empty));
        Assert.Throws<ArgumentNullException>(() => NumaPolicy.Bind(null!));

        // An empty preferred set is the kernel's "local node".
        Assert.Equal(NumaPolicyMode.Preferred, NumaPolicy.Preferred(NumaNodeSet.Empty).Mode);
    }

    [Fact]
    public void Single_node_is_known_only_for_preferred_or_bind_to_one_node()
    {
        Assert.Equal(1, NumaPolicy.Preferred(1).SingleNode);
        Assert.Equal(0, NumaPolicy.Bind(NumaNodeSet.Of(0)).SingleNode);
        Assert.Null(NumaPolicy.Bind(NumaNodeSet.Of(0, 1)).SingleNode);
        Assert.Null(NumaPolicy.Interleave(NumaNodeSet.Of(0)).SingleNode);
        Assert.Null(NumaPolicy.Default.SingleNode);
        Assert.Null(NumaPolicy.Local.SingleNode);
        Assert.Null(NumaPolicy.Preferred(NumaNodeSet.Empty).SingleNode);
        Assert.Null(NumaPolicy.Bind(NumaNodeSet.Of(1).WithNodeIdMeaning(false, true)).SingleNode);
    }

    [Fact]
    public void Policies_compare_by_value()
    {
        Assert.Equal(NumaPolicy.Bind(NumaNodeSet.Of(0, 2)), NumaPolicy.Bind(NumaNodeSet.Of(2, 0)));
        Assert.Equal(NumaPolicy.Bind(NumaNodeSet.Of(0, 2)).GetHashCode(), NumaPolicy.Bind(NumaNodeSet.Of(2, 0)).GetHashCode());
        Assert.NotEqual(NumaPolicy.Bind(NumaNodeSet.Of(0)), NumaPolicy.Interleave(NumaNodeSet.Of(0)));
        Assert.Equal("Bind{0,2}", NumaPolicy.Bind(NumaNodeSet.Of(0, 2)).ToString());
        Assert.Equal("Local", NumaPolicy.Local.ToString());
    }

    [Fact]
    public void Node_set_from_a_kernel_mask_decodes_every_word_and_drops_trailing_zeros()
    {
        ulong[] mask = [1UL | (1UL << 2), 1UL << 36, 0, 0];

        var set = NumaNodeSet.FromMask(mask);

        Assert.Equal(NumaNodeSet.Of(0, 2, 100), set);
        Assert.Equal([0, 2, 100], set.Nodes);
        Assert.Equal(129UL, set.MaxNode);
        Assert.Same(NumaNodeSet.Empty, NumaNodeSet.FromMask(new ulong[64]));
        Assert.Same(NumaNodeSet.Empty, NumaNodeSet.FromMask([]));
    }
}
