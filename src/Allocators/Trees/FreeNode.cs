namespace AllocHosting.Allocators;

/// <summary>
/// The header of a free block: a red-black tree node stored in the first bytes of the block it
/// describes. The node's key is its own address.
/// </summary>
/// <remarks>
/// Layout (24 bytes on 64-bit platforms, so it fits the 32-byte minimum block): left child, right
/// child, and the parent pointer with the colour in bit 0 (0 = red, 1 = black). Bit 0 is free
/// because every node is at least 32-byte aligned.
/// </remarks>
internal unsafe struct FreeNode
{
    public FreeNode* Left;
    public FreeNode* Right;
    public nuint ParentAndColour;
}
