using System.Runtime.CompilerServices;
using static AllocHosting.Allocators.FreeNode;

namespace AllocHosting.Allocators;

/// <summary>
/// An intrusive, address-ordered red-black tree of <see cref="FreeNode"/>s that also caches its
/// lowest node (the seed's <c>BinarySearchTreeWithCachedKnowledgeOfFirstChild</c>).
/// </summary>
/// <remarks>
/// <para>
/// The tree owns no memory: nodes live inside the free blocks they describe. Keys are unique
/// (the caller never inserts an address twice). Insertion and deletion follow the textbook
/// (CLRS) algorithms with null leaves; the deletion fix-up tests the colour of the node that
/// carries the extra black, which is what the seed's port got wrong (W-RB1).
/// </para>
/// <para>Embedded by value in its owner and always used through a reference; never copy it.</para>
/// </remarks>
internal unsafe struct RedBlackTree
{
    // Invariants: _root is null or black with a null parent; _first is the leftmost node (null iff
    // _root is null); every red node has black children; every root-to-null path has the same
    // number of black nodes; in-order traversal is strictly increasing by address.
    private FreeNode* _root;
    private FreeNode* _first;

    /// <summary>The lowest-addressed node, or null when the tree is empty.</summary>
    public readonly FreeNode* First
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _first;
    }

    /// <summary>The node whose address is <paramref name="address"/>, or null.</summary>
    public readonly FreeNode* Find(nuint address)
    {
        FreeNode* node = _root;
        while (node != null)
        {
            nuint key = (nuint)node;
            if (address == key)
            {
                return node;
            }

            node = address < key ? node->Left : node->Right;
        }

        return null;
    }

    /// <summary>
    /// Searches for <paramref name="address"/> and reports its neighbours and where it would be linked.
    /// </summary>
    /// <returns>The node at <paramref name="address"/> when present (the other outputs are then meaningless), otherwise null.</returns>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly FreeNode* Locate(nuint address, out FreeNode* predecessor, out FreeNode* successor, out FreeNode* parent, out bool asLeftChild)
    {
        // The last node where the descent went right is the predecessor, the last where it went
        // left the successor: one descent answers both neighbour questions and the insertion point.
        FreeNode* node = _root;
        predecessor = null;
        successor = null;
        parent = null;
        asLeftChild = false;
        while (node != null)
        {
            parent = node;
            nuint key = (nuint)node;
            if (address < key)
            {
                successor = node;
                asLeftChild = true;
                node = node->Left;
            }
            else if (address > key)
            {
                predecessor = node;
                asLeftChild = false;
                node = node->Right;
            }
            else
            {
                return node;
            }
        }

        return null;
    }

    /// <summary>Inserts a node at <paramref name="address"/>, which must not be in the tree.</summary>
    public void Insert(nuint address)
    {
        FreeNode* existing = Locate(address, out _, out _, out FreeNode* parent, out bool asLeftChild);
        if (existing != null)
        {
            throw new InvalidOperationException($"Address 0x{address:X} is already in the tree.");
        }

        InsertAt(address, parent, asLeftChild);
    }

    /// <summary>Links a new node at <paramref name="address"/> under the insertion point reported by <see cref="Locate"/>.</summary>
    public void InsertAt(nuint address, FreeNode* parent, bool asLeftChild)
    {
        var node = (FreeNode*)address;
        node->Left = null;
        node->Right = null;
        node->ParentAndColour = (nuint)parent; // red
        if (parent == null)
        {
            SetBlack(node);
            _root = node;
            _first = node;
            return;
        }

        if (asLeftChild)
        {
            parent->Left = node;

            // Only a left child of the current minimum can be the new minimum.
            if (parent == _first)
            {
                _first = node;
            }
        }
        else
        {
            parent->Right = node;
        }

        if (IsRed(parent))
        {
            FixAfterInsert(node);
        }
    }

    /// <summary>Unlinks <paramref name="node"/>, which must be in the tree. Other nodes keep their addresses.</summary>
    public void Remove(FreeNode* node)
    {
        if (node == _first)
        {
            _first = Successor(node);
        }

        FreeNode* child;
        FreeNode* childParent;
        bool removedBlack;
        if (node->Left == null)
        {
            child = node->Right;
            childParent = Parent(node);
            removedBlack = IsBlack(node);
            Transplant(node, child);
        }
        else if (node->Right == null)
        {
            child = node->Left;
            childParent = Parent(node);
            removedBlack = IsBlack(node);
            Transplant(node, child);
        }
        else
        {
            // Two children: the in-order successor takes the node's place (and colour); the
            // successor's own position is what loses a node.
            FreeNode* next = Minimum(node->Right);
            removedBlack = IsBlack(next);
            child = next->Right;
            if (Parent(next) == node)
            {
                childParent = next;
            }
            else
            {
                childParent = Parent(next);
                Transplant(next, next->Right);
                next->Right = node->Right;
                SetParent(next->Right, next);
            }

            Transplant(node, next);
            next->Left = node->Left;
            SetParent(next->Left, next);
            SetColourOf(next, node);
        }

        if (removedBlack)
        {
            FixAfterRemove(child, childParent);
        }
    }

    /// <summary>The in-order successor of <paramref name="node"/>, or null for the last node.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FreeNode* Successor(FreeNode* node)
    {
        if (node->Right != null)
        {
            return Minimum(node->Right);
        }

        FreeNode* parent = Parent(node);
        while (parent != null && node == parent->Right)
        {
            node = parent;
            parent = Parent(parent);
        }

        return parent;
    }

    /// <summary>The number of nodes (walks the whole tree).</summary>
    public readonly int Count()
    {
        int count = 0;
        for (FreeNode* node = _first; node != null; node = Successor(node))
        {
            count++;
        }

        return count;
    }

    /// <summary>Checks every red-black and bookkeeping invariant; returns a description of the first violation, or null.</summary>
    public readonly string? Validate()
    {
        if (_root == null)
        {
            return _first == null ? null : "the tree is empty but its cached first node is not null";
        }

        if (!IsBlack(_root))
        {
            return "the root is red";
        }

        if (Parent(_root) != null)
        {
            return "the root has a parent";
        }

        FreeNode* leftmost = _root;
        while (leftmost->Left != null)
        {
            leftmost = leftmost->Left;
        }

        if (leftmost != _first)
        {
            return $"the cached first node 0x{(nuint)_first:X} is not the leftmost node 0x{(nuint)leftmost:X}";
        }

        return ValidateSubtree(_root, 0, nuint.MaxValue, out _);
    }

    private static string? ValidateSubtree(FreeNode* node, nuint lowerExclusive, nuint upperExclusive, out int blackHeight)
    {
        blackHeight = 1;
        if (node == null)
        {
            return null;
        }

        nuint key = (nuint)node;
        if (key <= lowerExclusive || key >= upperExclusive)
        {
            return $"node 0x{key:X} breaks the address order";
        }

        if (IsRed(node) && (IsRed(node->Left) || IsRed(node->Right)))
        {
            return $"red node 0x{key:X} has a red child";
        }

        if (node->Left != null && Parent(node->Left) != node)
        {
            return $"the left child of 0x{key:X} does not point back to it";
        }

        if (node->Right != null && Parent(node->Right) != node)
        {
            return $"the right child of 0x{key:X} does not point back to it";
        }

        string? error = ValidateSubtree(node->Left, lowerExclusive, key, out int left);
        if (error != null)
        {
            return error;
        }

        error = ValidateSubtree(node->Right, key, upperExclusive, out int right);
        if (error != null)
        {
            return error;
        }

        if (left != right)
        {
            return $"node 0x{key:X} has black heights {left} (left) and {right} (right)";
        }

        blackHeight = left + (IsBlack(node) ? 1 : 0);
        return null;
    }

    // Both fix-ups are written out twice, the second branch the mirror of the first with left and
    // right swapped (as in CLRS): parametrising them by direction would add an indirection to
    // every insert and remove, which are on the allocator's free and split paths.
    private void FixAfterInsert(FreeNode* node)
    {
        FreeNode* parent;
        while ((parent = Parent(node)) != null && IsRed(parent))
        {
            // A red parent is never the root, so the grandparent exists.
            FreeNode* grandparent = Parent(parent);
            if (parent == grandparent->Left)
            {
                FreeNode* uncle = grandparent->Right;
                if (IsRed(uncle))
                {
                    SetBlack(parent);
                    SetBlack(uncle);
                    SetRed(grandparent);
                    node = grandparent;
                    continue;
                }

                if (node == parent->Right)
                {
                    node = parent;
                    RotateLeft(node);
                    parent = Parent(node);
                }

                SetBlack(parent);
                SetRed(grandparent);
                RotateRight(grandparent);
            }
            else
            {
                FreeNode* uncle = grandparent->Left;
                if (IsRed(uncle))
                {
                    SetBlack(parent);
                    SetBlack(uncle);
                    SetRed(grandparent);
                    node = grandparent;
                    continue;
                }

                if (node == parent->Left)
                {
                    node = parent;
                    RotateRight(node);
                    parent = Parent(node);
                }

                SetBlack(parent);
                SetRed(grandparent);
                RotateLeft(grandparent);
            }
        }

        SetBlack(_root);
    }

    // `node` (possibly null) carries an extra black; `parent` is its parent (needed when node is null).
    private void FixAfterRemove(FreeNode* node, FreeNode* parent)
    {
        while (node != _root && IsBlack(node))
        {
            // When node is null, parent->Left == null identifies the side: the other side must hold
            // at least one black node, so it cannot be null as well.
            if (node == parent->Left)
            {
                FreeNode* sibling = parent->Right;
                if (IsRed(sibling))
                {
                    SetBlack(sibling);
                    SetRed(parent);
                    RotateLeft(parent);
                    sibling = parent->Right;
                }

                if (IsBlack(sibling->Left) && IsBlack(sibling->Right))
                {
                    // Push the extra black up; the loop test then looks at the colour of the node
                    // now carrying it (the parent) — W-RB1 tested the parent's parent instead.
                    SetRed(sibling);
                    node = parent;
                    parent = Parent(node);
                    continue;
                }

                if (IsBlack(sibling->Right))
                {
                    SetBlack(sibling->Left);
                    SetRed(sibling);
                    RotateRight(sibling);
                    sibling = parent->Right;
                }

                SetColourOf(sibling, parent);
                SetBlack(parent);
                SetBlack(sibling->Right);
                RotateLeft(parent);
                node = _root;
            }
            else
            {
                FreeNode* sibling = parent->Left;
                if (IsRed(sibling))
                {
                    SetBlack(sibling);
                    SetRed(parent);
                    RotateRight(parent);
                    sibling = parent->Left;
                }

                if (IsBlack(sibling->Left) && IsBlack(sibling->Right))
                {
                    SetRed(sibling);
                    node = parent;
                    parent = Parent(node);
                    continue;
                }

                if (IsBlack(sibling->Left))
                {
                    SetBlack(sibling->Right);
                    SetRed(sibling);
                    RotateLeft(sibling);
                    sibling = parent->Left;
                }

                SetColourOf(sibling, parent);
                SetBlack(parent);
                SetBlack(sibling->Left);
                RotateRight(parent);
                node = _root;
            }
        }

        if (node != null)
        {
            SetBlack(node);
        }
    }

    private void RotateLeft(FreeNode* node)
    {
        FreeNode* pivot = node->Right;
        node->Right = pivot->Left;
        if (pivot->Left != null)
        {
            SetParent(pivot->Left, node);
        }

        Transplant(node, pivot);
        pivot->Left = node;
        SetParent(node, pivot);
    }

    private void RotateRight(FreeNode* node)
    {
        FreeNode* pivot = node->Left;
        node->Left = pivot->Right;
        if (pivot->Right != null)
        {
            SetParent(pivot->Right, node);
        }

        Transplant(node, pivot);
        pivot->Right = node;
        SetParent(node, pivot);
    }

    // Makes `replacement` (possibly null) take `node`'s place under node's parent.
    private void Transplant(FreeNode* node, FreeNode* replacement)
    {
        FreeNode* parent = Parent(node);
        if (parent == null)
        {
            _root = replacement;
        }
        else if (node == parent->Left)
        {
            parent->Left = replacement;
        }
        else
        {
            parent->Right = replacement;
        }

        if (replacement != null)
        {
            SetParent(replacement, parent);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static FreeNode* Minimum(FreeNode* node)
    {
        while (node->Left != null)
        {
            node = node->Left;
        }

        return node;
    }
}
