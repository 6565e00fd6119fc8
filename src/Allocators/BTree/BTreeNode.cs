using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The header of a B-tree node: one <see cref="Size"/>-byte page of native memory from a
/// <see cref="BTreeNodePool"/>, never a GC object.
/// </summary>
/// <remarks>
/// <para>
/// Layout of a page: this 32-byte header, then the entries (<see cref="BTreeKey"/>, 16 bytes each)
/// from <see cref="HeaderSize"/>. A leaf holds up to <see cref="MaximumLeafCapacity"/> (254)
/// entries and links to its neighbours (<see cref="Previous"/>, <see cref="Next"/>) so that a
/// cursor walks the whole tree in order. A branch holds up to <see cref="MaximumBranchCapacity"/>
/// (169) separator keys and one child pointer more, the pointers at a fixed offset after the
/// largest key array so that every tree, whatever capacity it chose, uses the same layout.
/// </para>
/// <para>
/// Separators follow the B+ tree rule: every entry under child <c>i</c> sorts before key <c>i</c>,
/// and every entry under child <c>i + 1</c> sorts with or after it. Entries live in leaves only.
/// </para>
/// </remarks>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct BTreeNode
{
    /// <summary>The bytes of one node page.</summary>
    public const int Size = 4096;

    /// <summary>The bytes before the first entry.</summary>
    public const int HeaderSize = 32;

    /// <summary>The most entries a leaf page holds: (4096 − 32) / 16.</summary>
    public const int MaximumLeafCapacity = (Size - HeaderSize) / 16;

    /// <summary>The most keys a branch page holds with one child pointer more: (4096 − 32 − 8) / 24.</summary>
    public const int MaximumBranchCapacity = (Size - HeaderSize - 8) / 24;

    private const int ChildrenOffset = HeaderSize + (MaximumBranchCapacity * 16);

    /// <summary>Entries (leaf) or separator keys (branch) in use.</summary>
    public int Count;

    /// <summary>1 for a leaf, 0 for a branch.</summary>
    public int IsLeaf;

    /// <summary>The leaf before this one in key order (leaves only), or null.</summary>
    public BTreeNode* Previous;

    /// <summary>The leaf after this one in key order (leaves only), or null.</summary>
    public BTreeNode* Next;

    private readonly nuint _reserved;

    /// <summary>The entries (leaf) or separators (branch) of <paramref name="node"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static BTreeKey* Keys(BTreeNode* node) => (BTreeKey*)((byte*)node + HeaderSize);

    /// <summary>The child pointers of the branch <paramref name="node"/> (one more than its keys).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static BTreeNode** Children(BTreeNode* node) => (BTreeNode**)((byte*)node + ChildrenOffset);
}
