using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// One entry of a <see cref="BTree{TOrder}"/>: two machine words, 16 bytes in a node page. The
/// tree's order (<see cref="IBTreeKeyOrder"/>) says which words are the key: both for the
/// best-fit index (size, address), only <see cref="First"/> for the address index (address,
/// size and free flag), whose <see cref="Second"/> is then a value the tree carries along.
/// </summary>
/// <param name="First">The first word, compared first.</param>
/// <param name="Second">The second word: the tie-breaker, or a value when the order ignores it.</param>
[StructLayout(LayoutKind.Sequential)]
internal readonly record struct BTreeKey(nuint First, nuint Second);
