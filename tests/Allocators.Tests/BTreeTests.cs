using AllocHosting.Allocators.MemorySources;
using CsCheck;

namespace AllocHosting.Allocators.Tests;

// The B+ tree of BTreeAllocator on its own, with tiny node capacities (3 to 5) so that a few dozen
// entries already split leaves and branches, borrow from siblings on both sides and merge nodes up
// to the root. The model is a SortedSet of the same keys; every step is followed by the tree's own
// invariant check (fill bounds, order, separators, uniform depth, leaf chain, count).
public unsafe class BTreeTests : IDisposable
{
    private readonly NativeMemorySource _source = new();
    private readonly BTreeNodePool _pool;

    public BTreeTests() => _pool = new BTreeNodePool(_source);

    public void Dispose()
    {
        _pool.Release();
        Assert.Equal(0, _source.BytesObtained);
        GC.SuppressFinalize(this);
    }

    private BTree<BTreeSizeOrder> Create(int leafCapacity = 4, int branchCapacity = 3) => new(_pool, leafCapacity, branchCapacity);

    private static BTreeKey Key(int value) => new((nuint)(value / 7), (nuint)value);

    private static void Insert(BTree<BTreeSizeOrder> tree, BTreeKey key)
    {
        Assert.True(tree.ReserveForInserts(1));
        Assert.True(tree.Insert(key));
    }

    private static List<BTreeKey> Entries(BTree<BTreeSizeOrder> tree)
    {
        var entries = new List<BTreeKey>();
        BTreeCursor cursor = tree.First();
        for (bool more = cursor.IsValid; more; more = cursor.MoveNext())
        {
            entries.Add(cursor.Key);
        }

        return entries;
    }

    private static List<BTreeKey> EntriesBackwards(BTree<BTreeSizeOrder> tree)
    {
        var entries = new List<BTreeKey>();
        BTreeCursor cursor = tree.LowerBound(new BTreeKey(nuint.MaxValue, nuint.MaxValue));
        while (cursor.MovePrevious())
        {
            entries.Add(cursor.Key);
        }

        entries.Reverse();
        return entries;
    }

    private static void AssertSame(BTree<BTreeSizeOrder> tree, SortedSet<int> model)
    {
        tree.Validate();
        Assert.Equal(model.Count, tree.Count);
        List<BTreeKey> expected = [.. model.Select(Key)];
        Assert.Equal(expected, Entries(tree));
        Assert.Equal(expected, EntriesBackwards(tree));
    }

    [Fact]
    public void An_empty_tree_has_no_entries_and_every_cursor_is_at_the_end()
    {
        var tree = Create();
        tree.Validate();
        Assert.Equal(0, tree.Height);
        Assert.False(tree.First().IsValid);
        Assert.False(tree.LowerBound(Key(5)).IsValid);
        Assert.False(tree.Find(Key(5)).IsValid);
        Assert.False(tree.Remove(Key(5)));
    }

    [Fact]
    public void Ascending_inserts_split_leaves_and_branches_and_grow_the_root()
    {
        var tree = Create();
        var model = new SortedSet<int>();
        int lastHeight = 0;
        for (int i = 0; i < 200; i++)
        {
            Insert(tree, Key(i));
            model.Add(i);
            AssertSame(tree, model);
            Assert.True(tree.Height >= lastHeight, "the tree never shrinks on insert");
            lastHeight = tree.Height;
        }

        // Leaves of at most 4 entries, branches of at most 4 children: 200 entries need 4 levels at least.
        Assert.True(tree.Height >= 4, $"height {tree.Height}");
    }

    [Fact]
    public void Descending_and_interleaved_inserts_keep_every_invariant()
    {
        var tree = Create(leafCapacity: 3, branchCapacity: 4);
        var model = new SortedSet<int>();
        for (int i = 99; i >= 0; i--)
        {
            Insert(tree, Key(2 * i));
            model.Add(2 * i);
            AssertSame(tree, model);
        }

        for (int i = 0; i < 100; i++)
        {
            Insert(tree, Key((2 * i) + 1));
            model.Add((2 * i) + 1);
            AssertSame(tree, model);
        }
    }

    [Fact]
    public void A_duplicate_insert_and_a_remove_of_an_absent_key_change_nothing()
    {
        var tree = Create();
        var model = new SortedSet<int>();
        for (int i = 0; i < 30; i++)
        {
            Insert(tree, Key(i * 3));
            model.Add(i * 3);
        }

        Assert.False(tree.Insert(Key(9)));
        Assert.False(tree.Remove(Key(10)));
        Assert.False(tree.Remove(Key(1000)));
        AssertSame(tree, model);
    }

    [Fact]
    public void Removing_from_the_left_the_right_and_the_middle_borrows_merges_and_collapses_the_root()
    {
        foreach (string order in new[] { "ascending", "descending", "middle-out", "every-other" })
        {
            var tree = Create();
            var model = new SortedSet<int>();
            for (int i = 0; i < 150; i++)
            {
                Insert(tree, Key(i));
                model.Add(i);
            }

            int[] removals = order switch
            {
                "ascending" => [.. Enumerable.Range(0, 150)],
                "descending" => [.. Enumerable.Range(0, 150).Reverse()],
                "middle-out" => [.. Enumerable.Range(0, 150).OrderBy(i => Math.Abs(i - 75))],
                _ => [.. Enumerable.Range(0, 150).Where(i => i % 2 == 0).Concat(Enumerable.Range(0, 150).Where(i => i % 2 == 1))],
            };
            foreach (int value in removals)
            {
                Assert.True(tree.Remove(Key(value)), $"{order}: remove {value}");
                model.Remove(value);
                AssertSame(tree, model);
            }

            Assert.Equal(0, tree.Height);
        }

        // Every page came back to the free list: a full tree and its removal leak nothing.
        Assert.Equal(_pool.ObtainedBytes / BTreeNode.Size, (nuint)_pool.FreeCount);
    }

    [Fact]
    public void LowerBound_finds_the_first_entry_not_below_the_key_across_leaf_boundaries()
    {
        var tree = Create();
        for (int i = 0; i < 100; i++)
        {
            Insert(tree, new BTreeKey((nuint)(i * 10), 0));
        }

        for (int probe = -1; probe <= 1000; probe++)
        {
            BTreeCursor cursor = tree.LowerBound(new BTreeKey((nuint)Math.Max(probe, 0), (nuint)(probe < 0 ? 0 : 1)));
            int expected = probe < 0 ? 0 : ((probe / 10) + 1) * 10;
            if (expected >= 1000)
            {
                Assert.False(cursor.IsValid, $"probe {probe}");
            }
            else
            {
                Assert.True(cursor.IsValid, $"probe {probe}");
                Assert.Equal((nuint)expected, cursor.Key.First);
            }
        }
    }

    [Fact]
    public void The_address_order_ignores_the_second_word_and_Replace_changes_it_in_place()
    {
        var tree = new BTree<BTreeAddressOrder>(_pool, 3, 3);
        for (int i = 0; i < 40; i++)
        {
            Assert.True(tree.ReserveForInserts(1));
            Assert.True(tree.Insert(new BTreeKey((nuint)(i * 16), (nuint)i)));
        }

        Assert.False(tree.Insert(new BTreeKey(32, 999)));
        for (int i = 0; i < 40; i++)
        {
            BTreeCursor found = tree.Find(new BTreeKey((nuint)(i * 16), 0));
            Assert.True(found.IsValid);
            Assert.Equal((nuint)i, found.Key.Second);
            tree.Replace(found, new BTreeKey((nuint)(i * 16), (nuint)(1000 + i)));
        }

        Assert.Throws<ArgumentException>(() => tree.Replace(tree.Find(new BTreeKey(16, 0)), new BTreeKey(17, 0)));
        tree.Validate();
        for (int i = 0; i < 40; i += 2)
        {
            Assert.True(tree.Remove(new BTreeKey((nuint)(i * 16), 12345)));
        }

        tree.Validate();
        for (int i = 1; i < 40; i += 2)
        {
            Assert.Equal((nuint)(1000 + i), tree.Find(new BTreeKey((nuint)(i * 16), 0)).Key.Second);
        }

        tree.Clear();
        tree.Validate();
    }

    [Fact]
    public void Full_page_nodes_hold_their_documented_capacities()
    {
        Assert.Equal(254, BTreeNode.MaximumLeafCapacity);
        Assert.Equal(169, BTreeNode.MaximumBranchCapacity);
        var tree = new BTree<BTreeSizeOrder>(_pool);
        for (int i = 0; i < 254; i++)
        {
            Insert(tree, Key(i));
        }

        Assert.Equal(1, tree.Height);
        Insert(tree, Key(254));
        Assert.Equal(2, tree.Height);
        for (int i = 255; i < 60_000; i++)
        {
            Insert(tree, Key(i));
        }

        // Ascending inserts leave every leaf but the last half full (127 entries): 472 leaves need
        // more than one branch of 170 children.
        tree.Validate();
        Assert.Equal(3, tree.Height);
        tree.Clear();
    }

    // Model: a SortedSet<int> of the keys. Random inserts and removes (half of them of keys present)
    // over a small key space, with node capacities drawn from 3 to 5, so that every sequence splits,
    // borrows and merges at node boundaries; after every step the tree is valid and holds exactly
    // the model's keys in order, walked forwards and backwards, and LowerBound agrees with the model.
    [Fact]
    public void Random_inserts_and_removes_match_a_SortedSet()
    {
        var operation = Gen.Select(Gen.Bool, Gen.Int[0, 300]);
        Gen.Select(Gen.Int[3, 5], Gen.Int[3, 5], operation.Array[1, 300]).Sample(
            (leafCapacity, branchCapacity, steps) =>
            {
                using var source = new PoolScope();
                var tree = new BTree<BTreeSizeOrder>(source.Pool, leafCapacity, branchCapacity);
                var model = new SortedSet<int>();
                foreach ((bool insert, int value) in steps)
                {
                    if (insert)
                    {
                        Assert.True(tree.ReserveForInserts(1));
                        Assert.Equal(model.Add(value), tree.Insert(Key(value)));
                    }
                    else
                    {
                        Assert.Equal(model.Remove(value), tree.Remove(Key(value)));
                    }

                    tree.Validate();
                    Assert.Equal(model.Count, tree.Count);
                    int? expected = model.GetViewBetween(value, int.MaxValue).Cast<int?>().FirstOrDefault();
                    BTreeCursor bound = tree.LowerBound(Key(value));
                    Assert.Equal(expected.HasValue, bound.IsValid);
                    if (expected.HasValue)
                    {
                        Assert.Equal(Key(expected.Value), bound.Key);
                    }
                }

                AssertSame(tree, model);
            },
            iter: 120);
    }

    // A pool of its own per sampled sequence (CsCheck may run them on several threads).
    private sealed class PoolScope : IDisposable
    {
        private readonly NativeMemorySource _source = new();

        public PoolScope() => Pool = new BTreeNodePool(_source);

        public BTreeNodePool Pool { get; }

        public void Dispose() => Pool.Release();
    }
}
