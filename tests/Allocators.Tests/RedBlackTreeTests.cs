using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Tests;

// The tree is tested over a native buffer of 32-byte nodes; node i lives at buffer + 32 i, so its
// key order is its index order. The reference model is a SortedSet of the indices in the tree.
public unsafe class RedBlackTreeTests
{
    private const int NodeSize = 32;

    // W-RB1: the seed's delete fix-up tested the colour of x's parent instead of x and broke the
    // invariants in every trial of exactly this experiment (insert 200 keys, delete 150, 300 trials).
    [Fact]
    public void W_RB1_random_inserts_and_deletes_keep_every_invariant()
    {
        const int Keys = 200;
        const int Deletes = 150;
        using var buffer = new NodeBuffer(Keys);
        var random = new Random(20_260_126);
        for (int trial = 0; trial < 300; trial++)
        {
            var tree = default(RedBlackTree);
            var model = new SortedSet<int>();
            int[] order = Shuffled(random, Keys);
            foreach (int index in order)
            {
                tree.Insert(buffer.Address(index));
                model.Add(index);
                AssertValid(ref tree, buffer, model, fullCheck: false);
            }

            AssertValid(ref tree, buffer, model, fullCheck: true);
            foreach (int index in Shuffled(random, Keys).Take(Deletes))
            {
                tree.Remove(buffer.Node(index));
                model.Remove(index);
                AssertValid(ref tree, buffer, model, fullCheck: false);
            }

            AssertValid(ref tree, buffer, model, fullCheck: true);
        }
    }

    [Fact]
    public void Removing_every_node_in_random_order_empties_the_tree()
    {
        const int Keys = 64;
        using var buffer = new NodeBuffer(Keys);
        var random = new Random(7);
        for (int trial = 0; trial < 50; trial++)
        {
            var tree = default(RedBlackTree);
            var model = new SortedSet<int>();
            foreach (int index in Shuffled(random, Keys))
            {
                tree.Insert(buffer.Address(index));
                model.Add(index);
            }

            foreach (int index in Shuffled(random, Keys))
            {
                tree.Remove(buffer.Node(index));
                model.Remove(index);
                AssertValid(ref tree, buffer, model, fullCheck: true);
            }

            Assert.True(tree.First == null, "the tree is empty");
        }
    }

    [Fact]
    public void Interleaved_inserts_and_removes_match_a_sorted_set()
    {
        const int Keys = 128;
        using var buffer = new NodeBuffer(Keys);
        var random = new Random(42);
        var tree = default(RedBlackTree);
        var model = new SortedSet<int>();
        for (int step = 0; step < 20_000; step++)
        {
            int index = random.Next(Keys);
            if (model.Contains(index))
            {
                tree.Remove(buffer.Node(index));
                model.Remove(index);
            }
            else
            {
                tree.Insert(buffer.Address(index));
                model.Add(index);
            }

            AssertValid(ref tree, buffer, model, fullCheck: step % 97 == 0);
        }
    }

    [Fact]
    public void Ascending_and_descending_inserts_stay_balanced()
    {
        const int Keys = 1000;
        using var buffer = new NodeBuffer(Keys);
        var ascending = default(RedBlackTree);
        var descending = default(RedBlackTree);
        for (int i = 0; i < Keys; i++)
        {
            ascending.Insert(buffer.Address(i));
        }

        using var second = new NodeBuffer(Keys);
        for (int i = Keys - 1; i >= 0; i--)
        {
            descending.Insert(second.Address(i));
        }

        Assert.Null(ascending.Validate());
        Assert.Null(descending.Validate());
        Assert.Equal(Keys, ascending.Count());
        Assert.True(Height(Root(ascending)) <= 2 * Math.Log2(Keys + 1), "a red-black tree's height is at most 2 log2(n + 1)");
        Assert.True(Height(Root(descending)) <= 2 * Math.Log2(Keys + 1));
        Assert.True(ascending.First == buffer.Node(0));
        Assert.True(descending.First == second.Node(0));
    }

    [Fact]
    public void Find_and_locate_answer_for_keys_in_and_between_nodes()
    {
        using var buffer = new NodeBuffer(16);
        var tree = default(RedBlackTree);
        foreach (int index in new[] { 2, 4, 6, 8, 10 })
        {
            tree.Insert(buffer.Address(index));
        }

        Assert.True(tree.Find(buffer.Address(6)) == buffer.Node(6));
        Assert.True(tree.Find(buffer.Address(7)) == null);
        Assert.True(LowerBound(ref tree, buffer.Address(7)) == buffer.Node(8));
        Assert.True(LowerBound(ref tree, buffer.Address(8)) == buffer.Node(8));
        Assert.True(LowerBound(ref tree, buffer.Address(11)) == null);
        Assert.True(LowerBound(ref tree, buffer.Address(0)) == buffer.Node(2));

        Assert.True(tree.Locate(buffer.Address(7), out FreeNode* predecessor, out FreeNode* successor, out _, out _) == null);
        Assert.True(predecessor == buffer.Node(6));
        Assert.True(successor == buffer.Node(8));
        Assert.True(tree.Locate(buffer.Address(1), out predecessor, out successor, out _, out _) == null);
        Assert.True(predecessor == null);
        Assert.True(successor == buffer.Node(2));
        Assert.True(tree.Locate(buffer.Address(4), out _, out _, out _, out _) == buffer.Node(4));

        Assert.True(RedBlackTree.Successor(buffer.Node(10)) == null);
        Assert.True(PredecessorOf(ref tree, buffer.Address(2)) == null);
        Assert.True(PredecessorOf(ref tree, buffer.Address(8)) == buffer.Node(6));
    }

    [Fact]
    public void Inserting_an_address_twice_throws_and_changes_nothing()
    {
        using var buffer = new NodeBuffer(4);
        var tree = default(RedBlackTree);
        tree.Insert(buffer.Address(1));
        tree.Insert(buffer.Address(2));
        Assert.Throws<InvalidOperationException>(() => InsertCopy(tree, buffer.Address(1)));
        Assert.Null(tree.Validate());
        Assert.Equal(2, tree.Count());
    }

    [Fact]
    public void Validate_reports_a_red_root_and_a_stale_first_node()
    {
        using var buffer = new NodeBuffer(4);
        var tree = default(RedBlackTree);
        tree.Insert(buffer.Address(1));
        buffer.Node(1)->ParentAndColour &= ~(nuint)1;
        Assert.Contains("root is red", tree.Validate(), StringComparison.Ordinal);
        buffer.Node(1)->ParentAndColour |= 1;
        Assert.Null(tree.Validate());

        // Corrupt the order: hang node 0 to the right of node 1 by hand.
        buffer.Node(1)->Right = buffer.Node(0);
        buffer.Node(0)->Left = null;
        buffer.Node(0)->Right = null;
        buffer.Node(0)->ParentAndColour = buffer.Address(1);
        Assert.Contains("address order", tree.Validate(), StringComparison.Ordinal);
    }

    // Copies are never used in production (the tree is always used by reference); here a copy keeps
    // the lambda from capturing a ref local.
    private static void InsertCopy(RedBlackTree tree, nuint address) => tree.Insert(address);

    // The lowest node at or above `address`: the node there, else the successor Locate reports.
    private static FreeNode* LowerBound(ref RedBlackTree tree, nuint address)
    {
        FreeNode* found = tree.Locate(address, out _, out FreeNode* successor, out _, out _);
        return found != null ? found : successor;
    }

    // The highest node below `address` (a node address, so `address - 1` is never a key).
    private static FreeNode* PredecessorOf(ref RedBlackTree tree, nuint address)
    {
        Assert.True(tree.Locate(address - 1, out FreeNode* predecessor, out _, out _, out _) == null);
        return predecessor;
    }

    // The root, found from the first node through the parent links.
    private static FreeNode* Root(RedBlackTree tree)
    {
        FreeNode* node = tree.First;
        while (node != null && FreeNode.Parent(node) != null)
        {
            node = FreeNode.Parent(node);
        }

        return node;
    }

    private static int Height(FreeNode* node) =>
        node == null ? 0 : 1 + Math.Max(Height(node->Left), Height(node->Right));

    private static int[] Shuffled(Random random, int count)
    {
        int[] values = Enumerable.Range(0, count).ToArray();
        random.Shuffle(values);
        return values;
    }

    private static void AssertValid(ref RedBlackTree tree, NodeBuffer buffer, SortedSet<int> model, bool fullCheck)
    {
        string? error = tree.Validate();
        Assert.True(error is null, error);
        if (model.Count == 0)
        {
            Assert.True(tree.First == null, "the tree is empty");
            return;
        }

        Assert.True(tree.First == buffer.Node(model.Min), "the cached first node is the lowest key");
        if (!fullCheck)
        {
            return;
        }

        var inOrder = new List<int>();
        for (FreeNode* node = tree.First; node != null; node = RedBlackTree.Successor(node))
        {
            inOrder.Add(buffer.IndexOf(node));
        }

        Assert.Equal(model, inOrder);
        var reversed = new List<int>();
        for (FreeNode* node = buffer.Node(model.Max); node != null; node = PredecessorOf(ref tree, (nuint)node))
        {
            reversed.Add(buffer.IndexOf(node));
        }

        Assert.Equal(model.Reverse(), reversed);
        for (int index = 0; index < buffer.Count; index++)
        {
            bool present = tree.Find(buffer.Address(index)) != null;
            Assert.Equal(model.Contains(index), present);
            FreeNode* bound = LowerBound(ref tree, buffer.Address(index));
            var expected = model.GetViewBetween(index, int.MaxValue);
            Assert.True(expected.Count == 0 ? bound == null : bound == buffer.Node(expected.Min));
        }
    }

    private sealed class NodeBuffer : IDisposable
    {
        private readonly byte* _base;

        public NodeBuffer(int count)
        {
            Count = count;
            _base = (byte*)NativeMemory.AlignedAlloc((nuint)(count * NodeSize), NodeSize);
        }

        public int Count { get; }

        public nuint Address(int index) => (nuint)(_base + ((nint)index * NodeSize));

        public FreeNode* Node(int index) => (FreeNode*)Address(index);

        public int IndexOf(FreeNode* node) => (int)(((byte*)node - _base) / NodeSize);

        public void Dispose() => NativeMemory.AlignedFree(_base);
    }
}
