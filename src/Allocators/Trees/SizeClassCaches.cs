using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The deferred-coalescing caches of a <see cref="MultipleBinarySearchTreeAllocator"/>: one
/// <see cref="FreeBlockCache"/> per size class, with their limits, and the flush that gives every
/// cached block back to the <see cref="SizeClassTrees"/>.
/// </summary>
/// <remarks>
/// Cache k holds at most <see cref="FreeBlockCache.Limit"/> blocks of class k: the per-class byte
/// budget (at most 256 KiB and 1/32 of the capacity) in blocks, but always one block and at most
/// <see cref="MultipleBinarySearchTreeAllocator.MaximumCachedBlocksPerClass"/>, so that a ping-pong
/// of even the largest block never splits and merges. Embedded by value in its owner and always
/// used through a reference; never copy it.
/// </remarks>
internal unsafe struct SizeClassCaches
{
    private const nuint BytesPerClass = 256 * 1024;

    private readonly int _topClass;
    private CacheArray _caches;

    /// <summary>Empty caches for the classes of <paramref name="trees"/>, with limits for a capacity of <paramref name="capacity"/> bytes.</summary>
    public SizeClassCaches(in SizeClassTrees trees, nuint capacity)
    {
        _topClass = trees.TopClass;
        nuint budget = Math.Min(BytesPerClass, capacity / 32);
        for (int k = 0; k <= _topClass; k++)
        {
            nuint blocks = budget / trees.BlockSizeOf(k);
            Cache(k).Limit = (int)Math.Clamp(blocks, 1, (nuint)MultipleBinarySearchTreeAllocator.MaximumCachedBlocksPerClass);
        }
    }

    /// <summary>The cache of size class <paramref name="sizeClass"/>.</summary>
    [UnscopedRef]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref FreeBlockCache Cache(int sizeClass) =>
        ref Unsafe.Add(ref Unsafe.As<CacheArray, FreeBlockCache>(ref _caches), sizeClass);

    /// <summary>Whether any class has a cached block.</summary>
    public bool HasBlocks()
    {
        for (int k = 0; k <= _topClass; k++)
        {
            if (Cache(k).Count != 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Gives every cached block to <paramref name="trees"/>, merging it with its free buddies.
    /// Smallest class first, although the result (everything coalesced that can be) does not
    /// depend on the order: of two free buddies, the second to reach its tree finds the first there.
    /// </summary>
    public void FlushInto(ref SizeClassTrees trees)
    {
        for (int k = 0; k <= _topClass; k++)
        {
            ref FreeBlockCache cache = ref Cache(k);
            for (nuint* block = cache.Pop(); block != null; block = cache.Pop())
            {
                trees.Free((nuint)block, k);
            }
        }
    }

    /// <summary>Forgets every cached block (their memory is being re-carved or released); keeps the limits.</summary>
    public void Clear()
    {
        for (int k = 0; k <= _topClass; k++)
        {
            Cache(k).Clear();
        }
    }

    [InlineArray(SizeClassTrees.MaximumClassCount)]
    private struct CacheArray
    {
        private FreeBlockCache _element;
    }
}
