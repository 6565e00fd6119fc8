using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The best-fit order of free blocks: by size (<see cref="BTreeKey.First"/>), then by address
/// (<see cref="BTreeKey.Second"/>), so that the first entry not below <c>(size, 0)</c> is the
/// smallest free block that holds <c>size</c> bytes, the lowest of its size.
/// </summary>
internal readonly struct BTreeSizeOrder : IBTreeKeyOrder
{
    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Compare(in BTreeKey x, in BTreeKey y)
    {
        if (x.First != y.First)
        {
            return x.First < y.First ? -1 : 1;
        }

        return x.Second < y.Second ? -1 : x.Second > y.Second ? 1 : 0;
    }
}
