using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace AllocHosting.Allocators;

/// <summary>
/// The free blocks of a <see cref="MultipleBinarySearchTreeAllocator"/> that are not cached: one
/// address-ordered <see cref="RedBlackTree"/> per power-of-two size class, with the buddy
/// algorithms over them (carving, splitting, merging, runs of top-class blocks).
/// </summary>
/// <remarks>
/// <para>
/// Tree k holds the free blocks of <c>MinimumBlockSize &lt;&lt; k</c> bytes, each aligned to its
/// size and stamped (<see cref="FreeBlockStamp"/>). Below the top class no tree holds two buddies
/// (they would have been merged); the top tree may hold adjacent blocks, which are never merged.
/// Taking a block does not erase its stamp: the allocator does, for the block it hands out.
/// </para>
/// <para>Embedded by value in its owner and always used through a reference; never copy it.</para>
/// </remarks>
internal unsafe struct SizeClassTrees
{
    /// <summary>The most size classes any configuration has: 2^5 … 2^30.</summary>
    public const int MaximumClassCount = 26;

    private readonly nuint _minimumBlockSize;
    private readonly nuint _maximumBlockSize;
    private readonly int _minimumShift;
    private readonly int _topClass;
    private TreeArray _trees;

    /// <summary>Empty trees for the size classes <paramref name="minimumBlockSize"/> … <paramref name="maximumBlockSize"/> (powers of two, validated by the caller).</summary>
    public SizeClassTrees(nuint minimumBlockSize, nuint maximumBlockSize)
    {
        _minimumBlockSize = minimumBlockSize;
        _maximumBlockSize = maximumBlockSize;
        _minimumShift = BitOperations.Log2(minimumBlockSize);
        _topClass = BitOperations.Log2(maximumBlockSize) - _minimumShift;
    }

    /// <summary>The class of the largest blocks, <see cref="MultipleBinarySearchTreeAllocator.MaximumBlockSize"/>.</summary>
    public readonly int TopClass => _topClass;

    /// <summary>The tree of size class <paramref name="sizeClass"/>.</summary>
    [UnscopedRef]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref RedBlackTree Tree(int sizeClass) =>
        ref Unsafe.Add(ref Unsafe.As<TreeArray, RedBlackTree>(ref _trees), sizeClass);

    /// <summary>The size class of a block of <paramref name="blockSize"/> bytes (a power of two within the classes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly int ClassOf(nuint blockSize) => BitOperations.Log2(blockSize) - _minimumShift;

    /// <summary>The block size of size class <paramref name="sizeClass"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly nuint BlockSizeOf(int sizeClass) => _minimumBlockSize << sizeClass;

    /// <summary>Forgets every free block (their memory is being re-carved or released).</summary>
    public void Clear() => _trees = default;

    /// <summary>
    /// Greedy carving (seed §7.3), restricted to size-aligned blocks: at each position the largest
    /// block that is aligned to its size and fits. For a region aligned to the top block this is
    /// exactly the seed's carving (top blocks while they fit, then at most one of each smaller class).
    /// </summary>
    /// <returns>The bytes carved.</returns>
    public nuint Carve(nuint start, nuint end)
    {
        nuint cursor = start;
        nuint carved = 0;
        while (end - cursor >= _minimumBlockSize)
        {
            nuint blockSize = Math.Min(LowestSetBit(cursor), _maximumBlockSize);
            while (blockSize > end - cursor)
            {
                blockSize >>= 1;
            }

            Tree(ClassOf(blockSize)).Insert(cursor);
            FreeBlockStamp.Mark(cursor);
            cursor += blockSize;
            carved += blockSize;
        }

        return carved;
    }

    /// <summary>
    /// Takes the lowest block of class <paramref name="sizeClass"/> aligned to
    /// <paramref name="alignment"/>, else splits the lowest aligned block of a larger class, giving
    /// its tail back as power-of-two pieces. Returns 0 when no block fits.
    /// </summary>
    public nuint Take(int sizeClass, nuint alignment)
    {
        // Also reached after a flush, with the exact class not yet searched, so it starts at First
        // (which every alignment up to the block size accepts).
        ref RedBlackTree exact = ref Tree(sizeClass);
        for (FreeNode* node = exact.First; node != null; node = RedBlackTree.Successor(node))
        {
            if (Allocator.IsAligned((nuint)node, alignment))
            {
                exact.Remove(node);
                return (nuint)node;
            }
        }

        // W-MB3: no stepping from an unaligned start (which never became aligned, and never ended
        // when the alignment exceeded the block). Every node is aligned to its own size, so the
        // only aligned position inside it that can fit the request is its start: when the start
        // is not aligned, the next aligned address is at least a whole node further on. Hence
        // there is never a front remainder, and the tail splits into size-aligned pieces.
        nuint blockSize = BlockSizeOf(sizeClass);
        for (int k = sizeClass + 1; k <= _topClass; k++)
        {
            ref RedBlackTree tree = ref Tree(k);
            for (FreeNode* node = tree.First; node != null; node = RedBlackTree.Successor(node))
            {
                nuint start = (nuint)node;
                if (Allocator.IsAligned(start, alignment))
                {
                    tree.Remove(node);
                    FreeRange(start + blockSize, start + BlockSizeOf(k));
                    return start;
                }
            }
        }

        return 0;
    }

    /// <summary>Takes the lowest run of <paramref name="count"/> contiguous top-class blocks whose first is aligned to <paramref name="alignment"/>; returns its start, or 0.</summary>
    public nuint TakeTopRun(nuint count, nuint alignment)
    {
        ref RedBlackTree top = ref Tree(_topClass);
        FreeNode* first = top.First;
        while (first != null)
        {
            if (!Allocator.IsAligned((nuint)first, alignment))
            {
                first = RedBlackTree.Successor(first);
                continue;
            }

            FreeNode* last = first;
            nuint run = 1;
            while (run < count)
            {
                FreeNode* next = RedBlackTree.Successor(last);
                if (next == null)
                {
                    return 0;
                }

                if ((nuint)last + _maximumBlockSize != (nuint)next)
                {
                    break;
                }

                last = next;
                run++;
            }

            if (run == count)
            {
                FreeNode* node = first;
                for (nuint i = 0; i < count; i++)
                {
                    FreeNode* next = RedBlackTree.Successor(node);
                    top.Remove(node);
                    node = next;
                }

                return (nuint)first;
            }

            // No run can start inside the one that just broke.
            first = RedBlackTree.Successor(last);
        }

        return 0;
    }

    /// <summary>Gives <c>[from, to)</c> (a multiple of the minimum block, less than a top block) back as power-of-two pieces, smallest first (the seed's split_up).</summary>
    public void FreeRange(nuint from, nuint to)
    {
        nuint remaining = to - from;
        while (remaining != 0)
        {
            nuint piece = LowestSetBit(remaining);
            Free(from, ClassOf(piece));
            from += piece;
            remaining -= piece;
        }
    }

    /// <summary>
    /// Frees one block of class <paramref name="sizeClass"/> at <paramref name="address"/>, merging
    /// it with its buddy (the adjacent block of the same size with which it forms a block aligned to
    /// twice the size) when that is free, and freeing the merged block one class up, until the buddy
    /// is not free or the top class is reached (top blocks are never merged: W-MB1, W-MB2, W-MB4).
    /// </summary>
    /// <remarks>
    /// The buddy is the block's in-order predecessor or successor, so the descent that finds the
    /// insertion point also finds it. Why buddies only, not any adjacent block of the same size as
    /// the seed intended: merging non-buddies produces blocks that are not size-aligned, after
    /// which freeing everything can leave the region fragmented for good (128 bytes as 32@0, 64@32,
    /// 32@96: no two blocks of one size are adjacent). With buddies, freeing everything always
    /// restores the initial carving.
    /// </remarks>
    /// <exception cref="ArgumentException">The block overlaps a free block of its class (a double free).</exception>
    public void Free(nuint address, int sizeClass)
    {
        while (true)
        {
            ref RedBlackTree tree = ref Tree(sizeClass);
            nuint blockSize = BlockSizeOf(sizeClass);
            FreeNode* existing = tree.Locate(address, out FreeNode* predecessor, out FreeNode* successor, out FreeNode* parent, out bool asLeftChild);
            if (Overlaps(existing, predecessor, successor, address, blockSize))
            {
                // At the first class the trees are still unchanged; above it, only a double free
                // that went undetected earlier can lead here. (The owner is sealed, so its name is
                // its type's name.)
                Allocator.ThrowDoubleFree(nameof(MultipleBinarySearchTreeAllocator), (void*)address);
            }

            // Stamped even when it merges into a lower buddy, so that a later double free of it
            // (now inside a larger free block) is still caught.
            FreeBlockStamp.Mark(address);
            if (sizeClass != _topClass)
            {
                nuint buddy = address ^ blockSize;
                FreeNode* neighbour = buddy > address ? successor : predecessor;
                if ((nuint)neighbour == buddy)
                {
                    tree.Remove(neighbour);
                    address &= ~blockSize;
                    sizeClass++;
                    continue;
                }
            }

            tree.InsertAt(address, parent, asLeftChild);
            return;
        }
    }

    /// <summary>Whether a top-class block at <paramref name="address"/> is, or overlaps, a free top-class block in the tree.</summary>
    public bool OverlapsFreeTopBlock(nuint address)
    {
        FreeNode* existing = Tree(_topClass).Locate(address, out FreeNode* predecessor, out FreeNode* successor, out _, out _);
        return Overlaps(existing, predecessor, successor, address, _maximumBlockSize);
    }

    /// <summary>
    /// Checks every tree's red-black invariants and the blocks' own: inside <c>[start, end)</c>,
    /// aligned to their size, stamped, and no buddies left unmerged below the top class. Adds each
    /// free block to <paramref name="blocks"/> for the caller's overlap check.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant is violated.</exception>
    public void Validate(nuint start, nuint end, List<(nuint Address, nuint Size)> blocks)
    {
        for (int k = 0; k <= _topClass; k++)
        {
            ref RedBlackTree tree = ref Tree(k);
            nuint blockSize = BlockSizeOf(k);
            string? error = tree.Validate();
            if (error != null)
            {
                throw new InvalidOperationException($"Tree of {blockSize}-byte blocks: {error}.");
            }

            for (FreeNode* node = tree.First; node != null; node = RedBlackTree.Successor(node))
            {
                nuint address = (nuint)node;
                if (address < start || blockSize > end - address || !Allocator.IsAligned(address, blockSize))
                {
                    throw new InvalidOperationException($"Free {blockSize}-byte block 0x{address:X} is outside the region or not aligned to its size.");
                }

                if (k != _topClass && (address & blockSize) == 0 && tree.Find(address + blockSize) != null)
                {
                    throw new InvalidOperationException($"Free {blockSize}-byte block 0x{address:X} and its buddy are both free but not merged.");
                }

                if (!FreeBlockStamp.IsMarked(address))
                {
                    throw new InvalidOperationException($"Free {blockSize}-byte block 0x{address:X} in the tree has lost its free stamp.");
                }

                blocks.Add((address, blockSize));
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static nuint LowestSetBit(nuint value)
    {
        if (Bmi1.X64.IsSupported)
        {
            return (nuint)Bmi1.X64.ExtractLowestSetBit(value);
        }

        return value & (0 - value);
    }

    // Whether a block of `blockSize` bytes at `address` is, or overlaps, a free block of the same
    // class: the block found at that address, or its in-order neighbours (all `blockSize` long).
    private static bool Overlaps(FreeNode* existing, FreeNode* predecessor, FreeNode* successor, nuint address, nuint blockSize) =>
        existing != null
        || (predecessor != null && (nuint)predecessor + blockSize > address)
        || (successor != null && address + blockSize > (nuint)successor);

    [InlineArray(MaximumClassCount)]
    private struct TreeArray
    {
        private RedBlackTree _element;
    }
}
