namespace AllocHosting.Allocators;

/// <summary>
/// The order of a <see cref="BTree{TOrder}"/>'s entries. A static abstract member of a struct type
/// argument, so that the JIT specialises the tree for each order and inlines the comparison into
/// the node searches (no delegate, no virtual call).
/// </summary>
internal interface IBTreeKeyOrder
{
    /// <summary>Negative, zero or positive as <paramref name="x"/> sorts before, with, or after <paramref name="y"/>.</summary>
    static abstract int Compare(in BTreeKey x, in BTreeKey y);
}
