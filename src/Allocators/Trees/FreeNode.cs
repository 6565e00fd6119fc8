using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The header of a free block: a red-black tree node stored in the first bytes of the block it
/// describes. The node's key is its own address.
/// </summary>
/// <remarks>
/// Layout (24 bytes on 64-bit platforms, so it fits the 32-byte minimum block): left child, right
/// child, and the parent pointer with the colour in bit 0 (0 = red, 1 = black). Bit 0 is free
/// because every node is at least 32-byte aligned. The static members read and write that packed
/// word, so that <see cref="RedBlackTree"/> never handles the bit itself.
/// </remarks>
internal unsafe struct FreeNode
{
    private const nuint BlackBit = 1;

    public FreeNode* Left;
    public FreeNode* Right;
    public nuint ParentAndColour;

    /// <summary>The node's parent (null for the root).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static FreeNode* Parent(FreeNode* node) => (FreeNode*)(node->ParentAndColour & ~BlackBit);

    /// <summary>Links the node to a new parent, keeping its colour.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetParent(FreeNode* node, FreeNode* parent) =>
        node->ParentAndColour = (nuint)parent | (node->ParentAndColour & BlackBit);

    /// <summary>Whether the node is black; a null leaf is black.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsBlack(FreeNode* node) => node == null || (node->ParentAndColour & BlackBit) != 0;

    /// <summary>Whether the node is red; a null leaf is not.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsRed(FreeNode* node) => node != null && (node->ParentAndColour & BlackBit) == 0;

    /// <summary>Colours the node black.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetBlack(FreeNode* node) => node->ParentAndColour |= BlackBit;

    /// <summary>Colours the node red.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetRed(FreeNode* node) => node->ParentAndColour &= ~BlackBit;

    /// <summary>Gives the node the colour of <paramref name="source"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetColourOf(FreeNode* node, FreeNode* source) =>
        node->ParentAndColour = (node->ParentAndColour & ~BlackBit) | (source->ParentAndColour & BlackBit);
}
