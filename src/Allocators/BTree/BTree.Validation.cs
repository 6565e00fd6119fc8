namespace AllocHosting.Allocators;

// The invariant check, for tests and the allocator's Validate: never on an allocation path.
internal sealed unsafe partial class BTree<TOrder>
{
    /// <summary>
    /// Checks every invariant: fill bounds, strict order within and across leaves, separators
    /// bounding their subtrees, all leaves at one depth, the leaf chain in order and complete,
    /// and the entry count. O(entries); changes nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant is violated.</exception>
    public void Validate()
    {
        if (_root == null)
        {
            Check(_height == 0 && _count == 0, "an empty tree has height 0 and no entries");
            return;
        }

        BTreeNode* previousLeaf = null;
        long entries = 0;
        ValidateNode(_root, 1, null, null, ref previousLeaf, ref entries);
        Check(previousLeaf->Next == null, "the last leaf has no successor");
        Check(entries == _count, $"the leaves hold {entries} entries, the tree counts {_count}");
    }

    // Entries under `node` lie in [low, high) (null: unbounded); leaves are visited in order.
    private void ValidateNode(BTreeNode* node, int depth, BTreeKey* low, BTreeKey* high, ref BTreeNode* previousLeaf, ref long entries)
    {
        bool root = node == _root;
        BTreeKey* keys = BTreeNode.Keys(node);
        for (int i = 0; i < node->Count; i++)
        {
            Check(i == 0 || TOrder.Compare(keys[i - 1], keys[i]) < 0, "keys in a node are strictly increasing");
            Check(low == null || TOrder.Compare(*low, keys[i]) <= 0, "no key is before its subtree's lower separator");
            Check(high == null || TOrder.Compare(keys[i], *high) < 0, "every key is before its subtree's upper separator");
        }

        if (node->IsLeaf != 0)
        {
            Check(depth == _height, $"a leaf at depth {depth} in a tree of height {_height}");
            Check(node->Count <= _leafCapacity && node->Count >= (root ? 1 : _leafMinimum), $"a leaf holds {node->Count} entries");
            Check(node->Previous == previousLeaf, "the leaf chain links back to the previous leaf");
            Check(previousLeaf == null || previousLeaf->Next == node, "the leaf chain links to the next leaf");
            Check(previousLeaf == null || TOrder.Compare(BTreeNode.Keys(previousLeaf)[previousLeaf->Count - 1], keys[0]) < 0, "leaves are in order");
            previousLeaf = node;
            entries += node->Count;
            return;
        }

        Check(depth < _height, "a branch above the leaves");
        Check(node->Count <= _branchCapacity && node->Count >= (root ? 1 : _branchMinimum), $"a branch holds {node->Count} keys");
        for (int i = 0; i <= node->Count; i++)
        {
            BTreeKey* childLow = i == 0 ? low : keys + i - 1;
            BTreeKey* childHigh = i == node->Count ? high : keys + i;
            ValidateNode(BTreeNode.Children(node)[i], depth + 1, childLow, childHigh, ref previousLeaf, ref entries);
        }
    }

    private static void Check(bool condition, string invariant)
    {
        if (!condition)
        {
            throw new InvalidOperationException($"B-tree invariant violated: {invariant}.");
        }
    }
}
