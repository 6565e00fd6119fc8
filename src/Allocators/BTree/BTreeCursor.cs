using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// A position in a <see cref="BTree{TOrder}"/>'s leaves: an entry, or the end (just after the
/// last entry). Valid until the tree is changed; walking it never descends from the root.
/// </summary>
internal unsafe struct BTreeCursor
{
    private BTreeNode* _leaf;
    private int _index;

    /// <summary>A cursor at entry <paramref name="index"/> of <paramref name="leaf"/> (an index equal to the count is the end of that leaf).</summary>
    public BTreeCursor(BTreeNode* leaf, int index)
    {
        _leaf = leaf;
        _index = index;
        if (leaf != null && index == leaf->Count && leaf->Next != null)
        {
            _leaf = leaf->Next;
            _index = 0;
        }
    }

    /// <summary>Whether the cursor is at an entry (not at the end, nor in an empty tree).</summary>
    public readonly bool IsValid
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _leaf != null && _index < _leaf->Count;
    }

    /// <summary>The entry at the cursor; only when <see cref="IsValid"/>.</summary>
    public readonly BTreeKey Key
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => BTreeNode.Keys(_leaf)[_index];
    }

    /// <summary>The leaf and the index of the entry, for the tree's in-place replacement.</summary>
    internal readonly BTreeKey* Slot => BTreeNode.Keys(_leaf) + _index;

    /// <summary>Moves to the next entry; <see langword="false"/> (and at the end) when there is none.</summary>
    public bool MoveNext()
    {
        if (_leaf == null)
        {
            return false;
        }

        if (_index + 1 < _leaf->Count)
        {
            _index++;
            return true;
        }

        if (_leaf->Next == null)
        {
            _index = _leaf->Count;
            return false;
        }

        _leaf = _leaf->Next;
        _index = 0;
        return true;
    }

    /// <summary>Moves to the previous entry (from the end, to the last entry); <see langword="false"/>, and invalid, when there is none.</summary>
    public bool MovePrevious()
    {
        if (_leaf == null)
        {
            return false;
        }

        if (_index > 0)
        {
            _index--;
            return true;
        }

        if (_leaf->Previous == null)
        {
            _leaf = null;
            return false;
        }

        _leaf = _leaf->Previous;
        _index = _leaf->Count - 1;
        return true;
    }
}
