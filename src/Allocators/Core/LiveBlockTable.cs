using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The live blocks of an allocator that checks every pointer it is given: a table from block
/// address to what the allocator keeps for the block. A pointer that is not a live block throws
/// <see cref="Allocator.ThrowNotLive"/>'s <see cref="ArgumentException"/>, one whose size or
/// alignment does not fit throws the block's <see cref="ILiveBlock.ThrowMismatch"/>; in both cases
/// the table is unchanged.
/// </summary>
/// <typeparam name="TBlock">What is kept per block; a struct, so the checks are specialised.</typeparam>
/// <remarks>
/// Not thread-safe: the owner serialises every call (each owner holds one lock around them, which
/// may also guard its other state). A block is in the table exactly while its address may be used,
/// so an owner takes it out before the memory can be handed to anyone else (freed, or moved by a
/// reallocation) and puts it in only once the memory is the caller's.
/// </remarks>
/// <param name="owner">The owner's type name, for messages.</param>
internal sealed unsafe class LiveBlockTable<TBlock>(string owner)
    where TBlock : struct, ILiveBlock
{
    private readonly Dictionary<nuint, TBlock> _blocks = [];

    /// <summary>The number of live blocks.</summary>
    public int Count => _blocks.Count;

    /// <summary>Whether <paramref name="pointer"/> is the address of a live block.</summary>
    public bool Contains(void* pointer) => _blocks.ContainsKey((nuint)pointer);

    /// <summary>Records a block the owner just handed out. An entry already at that address is replaced: the memory was freed behind the owner's back and reused.</summary>
    public void Set(void* pointer, TBlock block) => _blocks[(nuint)pointer] = block;

    /// <summary>The entry of the live block at <paramref name="pointer"/>, by reference so that the owner can update it without a second lookup.</summary>
    /// <exception cref="ArgumentException">No live block is at <paramref name="pointer"/>, or the size or alignment does not fit it.</exception>
    public ref TBlock Find(void* pointer, nuint size, nuint alignment)
    {
        ref TBlock block = ref CollectionsMarshal.GetValueRefOrNullRef(_blocks, (nuint)pointer);
        if (Unsafe.IsNullRef(ref block))
        {
            Allocator.ThrowNotLive(owner, pointer);
        }

        if (!block.Fits(size, alignment))
        {
            block.ThrowMismatch(pointer, size, alignment);
        }

        return ref block;
    }

    /// <summary>Takes the live block at <paramref name="pointer"/> out of the table and returns its entry.</summary>
    /// <exception cref="ArgumentException">No live block is at <paramref name="pointer"/>, or the size or alignment does not fit it (the table is unchanged).</exception>
    public TBlock Remove(void* pointer, nuint size, nuint alignment)
    {
        // One lookup on success: take the entry out, and put it back if it does not fit.
        if (!_blocks.Remove((nuint)pointer, out TBlock block))
        {
            Allocator.ThrowNotLive(owner, pointer);
        }

        if (!block.Fits(size, alignment))
        {
            _blocks.Add((nuint)pointer, block);
            block.ThrowMismatch(pointer, size, alignment);
        }

        return block;
    }

    /// <summary>Whether <paramref name="address"/> lies inside a live block, as <paramref name="length"/> measures each; a scan of every block.</summary>
    public bool ContainsInterior(nuint address, Func<TBlock, nuint> length)
    {
        foreach (var (start, block) in _blocks)
        {
            if (address - start < length(block))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Empties the table and returns what it held: the blocks an owner frees when it is disposed.</summary>
    public KeyValuePair<nuint, TBlock>[] RemoveAll()
    {
        KeyValuePair<nuint, TBlock>[] blocks = [.. _blocks];
        _blocks.Clear();
        return blocks;
    }
}
