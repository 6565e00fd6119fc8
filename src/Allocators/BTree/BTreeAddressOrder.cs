using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The address order of blocks: by <see cref="BTreeKey.First"/> (the address) only. Addresses are
/// unique, so <see cref="BTreeKey.Second"/> (the block's size and free flag) is a value that
/// <see cref="BTree{TOrder}.Replace"/> may change in place without moving the entry.
/// </summary>
internal readonly struct BTreeAddressOrder : IBTreeKeyOrder
{
    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Compare(in BTreeKey x, in BTreeKey y) =>
        x.First < y.First ? -1 : x.First > y.First ? 1 : 0;
}
