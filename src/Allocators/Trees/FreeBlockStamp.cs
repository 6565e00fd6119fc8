using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The mark every free block of a <see cref="MultipleBinarySearchTreeAllocator"/> carries, in a
/// tree or in a cache: <c>address ^ key</c> in the word after the tree node (word 3: offset 24
/// on 64-bit platforms, inside the 32-byte minimum block). A block being allocated has it erased.
/// </summary>
/// <remarks>
/// Frees are checked against the live block map (<see cref="LiveBlockClassMap"/>), not the stamp;
/// the stamp is what <see cref="MultipleBinarySearchTreeAllocator.Validate"/> checks to catch a
/// write to a freed block.
/// </remarks>
internal static unsafe class FreeBlockStamp
{
    private const int Word = 3;
    private static readonly nuint Key = unchecked((nuint)0x9E37_79B9_7F4A_7C15UL);

    /// <summary>Marks the block at <paramref name="block"/> free.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Mark(nuint block) => ((nuint*)block)[Word] = block ^ Key;

    /// <summary>Erases the mark of a block being handed out.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Erase(nuint block) => ((nuint*)block)[Word] = 0;

    /// <summary>Whether the block at <paramref name="block"/> carries its free mark (it may be stale, or caller data).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsMarked(nuint block) => ((nuint*)block)[Word] == (block ^ Key);
}
