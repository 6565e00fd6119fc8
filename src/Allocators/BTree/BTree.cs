using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// A B+ tree of <see cref="BTreeKey"/> entries ordered by <typeparamref name="TOrder"/>, whose
/// nodes are <see cref="BTreeNode.Size"/>-byte pages of native memory from a
/// <see cref="BTreeNodePool"/>: entries in leaves linked in order, separator keys in branches.
/// </summary>
/// <remarks>
/// <para>
/// Entries are unique under the order (an insert of an equal entry is refused). A leaf holds
/// between ⌊capacity / 2⌋ and its capacity entries, a branch between ⌊capacity / 2⌋ and its
/// capacity keys, except the root (a leaf with at least one entry or a branch with at least one
/// key). An insert into a full node splits it, the median going up; a remove that leaves a node
/// below the minimum borrows an entry from a sibling with more than the minimum, else merges with
/// a sibling (the separator coming down into a branch), the underflow possibly climbing to the
/// root, which collapses when it is left with one child.
/// </para>
/// <para>
/// An insert takes at most <see cref="Height"/> + 1 pages from the pool; the caller reserves them
/// first (<see cref="ReserveForInserts"/>), so that a refusal of the memory source comes before any
/// change. A remove frees pages and takes none. The default capacities fill a page (254 entries
/// per leaf, 169 keys per branch): a million entries fit in three levels. Tests choose tiny
/// capacities to reach splits, borrows and merges with a few entries. Not thread-safe.
/// </para>
/// </remarks>
/// <typeparam name="TOrder">The order of the entries, a struct so that the comparison inlines.</typeparam>
internal sealed unsafe partial class BTree<TOrder>
    where TOrder : struct, IBTreeKeyOrder
{
    // Deeper than any tree of addressable entries, even at the smallest fan-out of two.
    private const int MaximumHeight = 64;

    private readonly BTreeNodePool _pool;
    private readonly int _leafCapacity;
    private readonly int _branchCapacity;
    private readonly int _leafMinimum;
    private readonly int _branchMinimum;

    // Null when the tree is empty; otherwise a leaf (height 1) or a branch. Every leaf is at depth _height.
    private BTreeNode* _root;
    private int _height;
    private long _count;

    /// <summary>Creates an empty tree whose nodes come from <paramref name="pool"/>, with full-page capacities.</summary>
    public BTree(BTreeNodePool pool)
        : this(pool, BTreeNode.MaximumLeafCapacity, BTreeNode.MaximumBranchCapacity)
    {
    }

    /// <summary>Creates an empty tree with the given node capacities (at least 3; tests use small ones).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A capacity is below 3 or does not fit a page.</exception>
    public BTree(BTreeNodePool pool, int leafCapacity, int branchCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(leafCapacity, 3);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(leafCapacity, BTreeNode.MaximumLeafCapacity);
        ArgumentOutOfRangeException.ThrowIfLessThan(branchCapacity, 3);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(branchCapacity, BTreeNode.MaximumBranchCapacity);
        _pool = pool;
        _leafCapacity = leafCapacity;
        _branchCapacity = branchCapacity;
        _leafMinimum = leafCapacity / 2;
        _branchMinimum = branchCapacity / 2;
    }

    /// <summary>The number of entries.</summary>
    public long Count => _count;

    /// <summary>The number of levels: 0 when empty, 1 when the root is a leaf.</summary>
    public int Height => _height;

    /// <summary>
    /// Makes sure the pool holds the pages <paramref name="inserts"/> inserts may take: each splits
    /// at most one node per level and may add a root, and each may make the tree a level taller.
    /// </summary>
    /// <returns><see langword="false"/> when the memory source refused; nothing in the tree changed.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool ReserveForInserts(int inserts)
    {
        int pages = PagesForInserts(inserts);
        return _pool.FreeCount >= pages || _pool.TryReserve(pages);
    }

    /// <summary>The most pages <paramref name="inserts"/> inserts can take (for a caller that reserves for several trees of one pool at once).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int PagesForInserts(int inserts) => inserts * (_height + inserts + 1);

    /// <summary>A cursor at the first entry not before <paramref name="key"/> (at the end when every entry is before it).</summary>
    public BTreeCursor LowerBound(in BTreeKey key)
    {
        BTreeNode* node = _root;
        if (node == null)
        {
            return default;
        }

        while (node->IsLeaf == 0)
        {
            node = BTreeNode.Children(node)[ChildIndex(node, key)];
        }

        return new BTreeCursor(node, LeafIndex(node, key));
    }

    /// <summary>A cursor at the entry equal to <paramref name="key"/> under the order; invalid when there is none.</summary>
    public BTreeCursor Find(in BTreeKey key)
    {
        BTreeCursor cursor = LowerBound(key);
        return cursor.IsValid && TOrder.Compare(cursor.Key, key) == 0 ? cursor : default;
    }

    /// <summary>A cursor at the first entry (at the end when the tree is empty).</summary>
    public BTreeCursor First()
    {
        BTreeNode* node = _root;
        if (node == null)
        {
            return default;
        }

        while (node->IsLeaf == 0)
        {
            node = BTreeNode.Children(node)[0];
        }

        return new BTreeCursor(node, 0);
    }

    /// <summary>
    /// Overwrites the entry at <paramref name="cursor"/> with <paramref name="key"/>, which must sort
    /// equal to it (for the address order: the same address, another value). Separators keep the
    /// old entry; that is harmless because they compare equal.
    /// </summary>
    /// <exception cref="ArgumentException">The cursor is not at an entry, or the new entry does not sort equal to it.</exception>
    public void Replace(in BTreeCursor cursor, in BTreeKey key)
    {
        if (!cursor.IsValid || TOrder.Compare(cursor.Key, key) != 0)
        {
            throw new ArgumentException("Only an entry at a valid cursor can be replaced, and only by one that sorts equal to it.", nameof(key));
        }

        *cursor.Slot = key;
    }

    /// <summary>Inserts <paramref name="key"/>; the caller reserved the pages (<see cref="ReserveForInserts"/>).</summary>
    /// <returns><see langword="false"/> when an equal entry is in the tree already (nothing changed).</returns>
    public bool Insert(in BTreeKey key)
    {
        if (_root == null)
        {
            BTreeNode* leaf = _pool.Rent();
            leaf->IsLeaf = 1;
            leaf->Count = 1;
            BTreeNode.Keys(leaf)[0] = key;
            _root = leaf;
            _height = 1;
            _count = 1;
            return true;
        }

        BTreeNode** path = stackalloc BTreeNode*[MaximumHeight];
        int* slots = stackalloc int[MaximumHeight];
        BTreeNode* node = _root;
        int depth = 0;
        while (node->IsLeaf == 0)
        {
            int child = ChildIndex(node, key);
            path[depth] = node;
            slots[depth++] = child;
            node = BTreeNode.Children(node)[child];
        }

        int position = LeafIndex(node, key);
        if (position < node->Count && TOrder.Compare(BTreeNode.Keys(node)[position], key) == 0)
        {
            return false;
        }

        _count++;
        if (node->Count < _leafCapacity)
        {
            InsertAt(BTreeNode.Keys(node), node->Count, position, key);
            node->Count++;
            return true;
        }

        BTreeNode* right = SplitLeaf(node, position, key);
        BTreeKey separator = BTreeNode.Keys(right)[0];

        // Climb while the parent is full: each split hands its median and new right node upwards.
        while (depth > 0)
        {
            BTreeNode* parent = path[--depth];
            int slot = slots[depth];
            if (parent->Count < _branchCapacity)
            {
                InsertAt(BTreeNode.Keys(parent), parent->Count, slot, separator);
                InsertChild(BTreeNode.Children(parent), parent->Count + 1, slot + 1, right);
                parent->Count++;
                return true;
            }

            right = SplitBranch(parent, slot, ref separator, right);
        }

        BTreeNode* root = _pool.Rent();
        root->Count = 1;
        BTreeNode.Keys(root)[0] = separator;
        BTreeNode.Children(root)[0] = _root;
        BTreeNode.Children(root)[1] = right;
        _root = root;
        _height++;
        return true;
    }

    /// <summary>Removes the entry equal to <paramref name="key"/> under the order.</summary>
    /// <returns><see langword="false"/> when there is none (nothing changed).</returns>
    public bool Remove(in BTreeKey key)
    {
        if (_root == null)
        {
            return false;
        }

        BTreeNode** path = stackalloc BTreeNode*[MaximumHeight];
        int* slots = stackalloc int[MaximumHeight];
        BTreeNode* node = _root;
        int depth = 0;
        while (node->IsLeaf == 0)
        {
            int child = ChildIndex(node, key);
            path[depth] = node;
            slots[depth++] = child;
            node = BTreeNode.Children(node)[child];
        }

        int position = LeafIndex(node, key);
        if (position >= node->Count || TOrder.Compare(BTreeNode.Keys(node)[position], key) != 0)
        {
            return false;
        }

        RemoveAt(BTreeNode.Keys(node), node->Count, position);
        node->Count--;
        _count--;
        if (depth == 0)
        {
            if (node->Count == 0)
            {
                _pool.Return(node);
                _root = null;
                _height = 0;
            }

            return true;
        }

        if (node->Count >= _leafMinimum)
        {
            return true;
        }

        // The leaf is short by one: fix it, then every branch above that lost a key by a merge.
        depth--;
        if (!FixLeaf(path[depth], slots[depth], node))
        {
            return true;
        }

        while (depth > 0)
        {
            BTreeNode* branch = path[depth];
            if (branch->Count >= _branchMinimum)
            {
                return true;
            }

            depth--;
            if (!FixBranch(path[depth], slots[depth], branch))
            {
                return true;
            }
        }

        if (_root->Count == 0)
        {
            BTreeNode* old = _root;
            _root = BTreeNode.Children(old)[0];
            _pool.Return(old);
            _height--;
        }

        return true;
    }

    /// <summary>Removes every entry, giving every page back to the pool.</summary>
    public void Clear()
    {
        if (_root != null)
        {
            ReturnSubtree(_root);
        }

        Forget();
    }

    /// <summary>Forgets every entry without touching the pages (when the pool's memory is released wholesale).</summary>
    public void Forget()
    {
        _root = null;
        _height = 0;
        _count = 0;
    }

    // The child to descend into: the number of separators not after the key.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ChildIndex(BTreeNode* branch, in BTreeKey key)
    {
        BTreeKey* keys = BTreeNode.Keys(branch);
        int low = 0;
        int high = branch->Count;
        while (low < high)
        {
            int middle = (int)((uint)(low + high) >> 1);
            if (TOrder.Compare(keys[middle], key) <= 0)
            {
                low = middle + 1;
            }
            else
            {
                high = middle;
            }
        }

        return low;
    }

    // The first entry of the leaf not before the key.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int LeafIndex(BTreeNode* leaf, in BTreeKey key)
    {
        BTreeKey* keys = BTreeNode.Keys(leaf);
        int low = 0;
        int high = leaf->Count;
        while (low < high)
        {
            int middle = (int)((uint)(low + high) >> 1);
            if (TOrder.Compare(keys[middle], key) < 0)
            {
                low = middle + 1;
            }
            else
            {
                high = middle;
            }
        }

        return low;
    }

    private static void InsertAt<T>(T* items, int count, int position, T item)
        where T : unmanaged
    {
        Buffer.MemoryCopy(items + position, items + position + 1, (count - position) * sizeof(T), (count - position) * sizeof(T));
        items[position] = item;
    }

    private static void RemoveAt<T>(T* items, int count, int position)
        where T : unmanaged
    {
        Buffer.MemoryCopy(items + position + 1, items + position, (count - position - 1) * sizeof(T), (count - position - 1) * sizeof(T));
    }

    private static void InsertChild(BTreeNode** children, int count, int position, BTreeNode* child) =>
        InsertAt((nint*)children, count, position, (nint)child);

    private static void RemoveChild(BTreeNode** children, int count, int position) =>
        RemoveAt((nint*)children, count, position);

    private static void CopyChildren(BTreeNode** from, BTreeNode** to, int count) =>
        Copy((nint*)from, (nint*)to, count);

    private static void Copy<T>(T* from, T* to, int count)
        where T : unmanaged =>
        Buffer.MemoryCopy(from, to, count * sizeof(T), count * sizeof(T));

    // A full leaf plus the key at `position`: the lower ⌊(capacity + 1) / 2⌋ entries stay, the rest
    // move to a new right leaf linked after it.
    private BTreeNode* SplitLeaf(BTreeNode* leaf, int position, in BTreeKey key)
    {
        BTreeNode* right = _pool.Rent();
        right->IsLeaf = 1;
        int total = _leafCapacity + 1;
        int left = total / 2;
        BTreeKey* keys = BTreeNode.Keys(leaf);
        BTreeKey* rightKeys = BTreeNode.Keys(right);
        if (position < left)
        {
            Copy(keys + left - 1, rightKeys, _leafCapacity - left + 1);
            InsertAt(keys, left - 1, position, key);
        }
        else
        {
            Copy(keys + left, rightKeys, _leafCapacity - left);
            InsertAt(rightKeys, _leafCapacity - left, position - left, key);
        }

        leaf->Count = left;
        right->Count = total - left;
        right->Next = leaf->Next;
        right->Previous = leaf;
        if (leaf->Next != null)
        {
            leaf->Next->Previous = right;
        }

        leaf->Next = right;
        return right;
    }

    // A full branch plus (separator, child) at `slot`: the lower keys and their children stay, the
    // median goes up through `separator`, the upper keys and children move to the returned branch.
    private BTreeNode* SplitBranch(BTreeNode* branch, int slot, ref BTreeKey separator, BTreeNode* child)
    {
        int count = _branchCapacity;
        BTreeKey* keys = stackalloc BTreeKey[count + 1];
        BTreeNode** children = stackalloc BTreeNode*[count + 2];
        Copy(BTreeNode.Keys(branch), keys, count);
        CopyChildren(BTreeNode.Children(branch), children, count + 1);
        InsertAt(keys, count, slot, separator);
        InsertChild(children, count + 1, slot + 1, child);

        int middle = (count + 1) / 2;
        BTreeNode* right = _pool.Rent();
        Copy(keys, BTreeNode.Keys(branch), middle);
        CopyChildren(children, BTreeNode.Children(branch), middle + 1);
        branch->Count = middle;
        Copy(keys + middle + 1, BTreeNode.Keys(right), count - middle);
        CopyChildren(children + middle + 1, BTreeNode.Children(right), count - middle + 1);
        right->Count = count - middle;
        separator = keys[middle];
        return right;
    }

    // The leaf under `parent` at `slot` is one entry short: borrow from a richer sibling, else
    // merge. Returns true when the parent lost a key (a merge), which may make it short in turn.
    private bool FixLeaf(BTreeNode* parent, int slot, BTreeNode* leaf)
    {
        BTreeNode** children = BTreeNode.Children(parent);
        BTreeKey* separators = BTreeNode.Keys(parent);
        BTreeKey* keys = BTreeNode.Keys(leaf);
        if (slot > 0 && children[slot - 1]->Count > _leafMinimum)
        {
            BTreeNode* left = children[slot - 1];
            InsertAt(keys, leaf->Count, 0, BTreeNode.Keys(left)[--left->Count]);
            leaf->Count++;
            separators[slot - 1] = keys[0];
            return false;
        }

        if (slot < parent->Count && children[slot + 1]->Count > _leafMinimum)
        {
            BTreeNode* right = children[slot + 1];
            BTreeKey* rightKeys = BTreeNode.Keys(right);
            keys[leaf->Count++] = rightKeys[0];
            RemoveAt(rightKeys, right->Count, 0);
            right->Count--;
            separators[slot] = rightKeys[0];
            return false;
        }

        // Merge the right one of the pair into the left one and drop the separator between them.
        int leftSlot = slot > 0 ? slot - 1 : slot;
        BTreeNode* into = children[leftSlot];
        BTreeNode* from = children[leftSlot + 1];
        Copy(BTreeNode.Keys(from), BTreeNode.Keys(into) + into->Count, from->Count);
        into->Count += from->Count;
        into->Next = from->Next;
        if (from->Next != null)
        {
            from->Next->Previous = into;
        }

        RemoveAt(separators, parent->Count, leftSlot);
        RemoveChild(children, parent->Count + 1, leftSlot + 1);
        parent->Count--;
        _pool.Return(from);
        return true;
    }

    // As FixLeaf for a branch one key short: keys rotate through the parent's separator.
    private bool FixBranch(BTreeNode* parent, int slot, BTreeNode* branch)
    {
        BTreeNode** children = BTreeNode.Children(parent);
        BTreeKey* separators = BTreeNode.Keys(parent);
        BTreeKey* keys = BTreeNode.Keys(branch);
        BTreeNode** branchChildren = BTreeNode.Children(branch);
        if (slot > 0 && children[slot - 1]->Count > _branchMinimum)
        {
            BTreeNode* left = children[slot - 1];
            InsertAt(keys, branch->Count, 0, separators[slot - 1]);
            InsertChild(branchChildren, branch->Count + 1, 0, BTreeNode.Children(left)[left->Count]);
            branch->Count++;
            separators[slot - 1] = BTreeNode.Keys(left)[--left->Count];
            return false;
        }

        if (slot < parent->Count && children[slot + 1]->Count > _branchMinimum)
        {
            BTreeNode* right = children[slot + 1];
            keys[branch->Count] = separators[slot];
            branchChildren[branch->Count + 1] = BTreeNode.Children(right)[0];
            branch->Count++;
            separators[slot] = BTreeNode.Keys(right)[0];
            RemoveAt(BTreeNode.Keys(right), right->Count, 0);
            RemoveChild(BTreeNode.Children(right), right->Count + 1, 0);
            right->Count--;
            return false;
        }

        int leftSlot = slot > 0 ? slot - 1 : slot;
        BTreeNode* into = children[leftSlot];
        BTreeNode* from = children[leftSlot + 1];
        BTreeNode.Keys(into)[into->Count] = separators[leftSlot];
        Copy(BTreeNode.Keys(from), BTreeNode.Keys(into) + into->Count + 1, from->Count);
        CopyChildren(BTreeNode.Children(from), BTreeNode.Children(into) + into->Count + 1, from->Count + 1);
        into->Count += from->Count + 1;
        RemoveAt(separators, parent->Count, leftSlot);
        RemoveChild(children, parent->Count + 1, leftSlot + 1);
        parent->Count--;
        _pool.Return(from);
        return true;
    }

    private void ReturnSubtree(BTreeNode* node)
    {
        if (node->IsLeaf == 0)
        {
            for (int i = 0; i <= node->Count; i++)
            {
                ReturnSubtree(BTreeNode.Children(node)[i]);
            }
        }

        _pool.Return(node);
    }
}
