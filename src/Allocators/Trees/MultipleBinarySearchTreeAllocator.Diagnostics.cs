using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

// Diagnostics: what the size classes hold, and the full invariant check. None of it is on an
// allocation path; each member walks trees or caches.
public sealed unsafe partial class MultipleBinarySearchTreeAllocator
{
    /// <summary>
    /// The number of free blocks of size class <paramref name="sizeClass"/> (blocks of
    /// <c>MinimumBlockSize &lt;&lt; sizeClass</c> bytes) in its tree, cached blocks not included:
    /// with <see cref="CachedBlockCount"/>, a picture of how fragmented the free memory is. Walks
    /// the tree: O(free blocks of the class).
    /// </summary>
    /// <param name="sizeClass">The size class, 0 (the minimum block) to <see cref="SizeClassCount"/> − 1.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sizeClass"/> is not a size class.</exception>
    public int FreeBlockCount(int sizeClass)
    {
        CheckSizeClass(sizeClass);
        return _trees.Tree(sizeClass).Count();
    }

    /// <summary>The number of free blocks of size class <paramref name="sizeClass"/> waiting in its deferred-coalescing cache (not merged, not in the tree). O(1).</summary>
    /// <param name="sizeClass">The size class, 0 (the minimum block) to <see cref="SizeClassCount"/> − 1.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sizeClass"/> is not a size class.</exception>
    public int CachedBlockCount(int sizeClass)
    {
        CheckSizeClass(sizeClass);
        return _caches.Cache(sizeClass).Count;
    }

    /// <summary>
    /// The most blocks the cache of size class <paramref name="sizeClass"/> keeps before frees
    /// merge into the tree: at most <see cref="MaximumCachedBlocksPerClass"/>, at most 256 KiB and
    /// 1/32 of the capacity, but always one block. Fixed at construction.
    /// </summary>
    /// <param name="sizeClass">The size class, 0 (the minimum block) to <see cref="SizeClassCount"/> − 1.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sizeClass"/> is not a size class.</exception>
    public int CachedBlockLimit(int sizeClass)
    {
        CheckSizeClass(sizeClass);
        return _caches.Cache(sizeClass).Limit;
    }

    /// <summary>
    /// Checks every invariant of the allocator, for tests and debugging: every tree's red-black
    /// invariants; free blocks (in trees and caches) lie in the region, are aligned to their size,
    /// carry their free stamp and do not overlap (so no block is both cached and in a tree, or
    /// cached twice); no tree block's buddy is in the same tree below the top class; every cache
    /// holds as many blocks as it counts, within its limit; and free plus in-use bytes equal the
    /// capacity; the live block map covers exactly the bytes in use. O(free blocks × log + region /
    /// minimum block), allocating a list of the free blocks; it changes nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant is violated (the allocator is corrupted, for example by a write to a freed block).</exception>
    public void Validate()
    {
        var blocks = new List<(nuint Address, nuint Size)>();
        nuint end = _start + _length;
        _trees.Validate(_start, end, blocks);
        for (int k = 0; k <= _topClass; k++)
        {
            ValidateCache(k, end, blocks);
        }

        blocks.Sort((a, b) => a.Address.CompareTo(b.Address));
        nuint freeBytes = 0;
        for (int i = 0; i < blocks.Count; i++)
        {
            freeBytes += blocks[i].Size;
            if (i > 0 && blocks[i - 1].Address + blocks[i - 1].Size > blocks[i].Address)
            {
                throw new InvalidOperationException($"Free blocks 0x{blocks[i - 1].Address:X} ({blocks[i - 1].Size} bytes) and 0x{blocks[i].Address:X} overlap (or one is both cached and in a tree).");
            }
        }

        if ((long)freeBytes + _counters.BytesInUse != _capacity)
        {
            throw new InvalidOperationException($"Free bytes ({freeBytes}) plus bytes in use ({_counters.BytesInUse}) differ from the capacity ({_capacity}).");
        }

        if (_live.Totals().Bytes != _counters.BytesInUse)
        {
            throw new InvalidOperationException($"The live block map covers {_live.Totals().Bytes} bytes, not the {_counters.BytesInUse} bytes in use.");
        }
    }

    private void ValidateCache(int sizeClass, nuint end, List<(nuint Address, nuint Size)> blocks)
    {
        ref FreeBlockCache cache = ref _caches.Cache(sizeClass);
        nuint blockSize = _trees.BlockSizeOf(sizeClass);
        if (cache.Count < 0 || cache.Count > cache.Limit || cache.Limit > MaximumCachedBlocksPerClass)
        {
            throw new InvalidOperationException($"The cache of {blockSize}-byte blocks counts {cache.Count} blocks (limit {cache.Limit}).");
        }

        int walked = 0;
        for (nuint* block = cache.First; block != null; block = FreeBlockCache.Next(block))
        {
            // Checked before following the link, so a corrupted link is reported, not followed.
            nuint address = (nuint)block;
            if (++walked > cache.Count)
            {
                throw new InvalidOperationException($"The cache of {blockSize}-byte blocks holds more blocks than it counts ({cache.Count}).");
            }

            if (address < _start || blockSize > end - address || !Allocator.IsAligned(address, blockSize))
            {
                throw new InvalidOperationException($"Cached {blockSize}-byte block 0x{address:X} is outside the region or not aligned to its size.");
            }

            if (!FreeBlockStamp.IsMarked(address))
            {
                throw new InvalidOperationException($"Cached {blockSize}-byte block 0x{address:X} has lost its free stamp.");
            }

            blocks.Add((address, blockSize));
        }

        if (walked != cache.Count)
        {
            throw new InvalidOperationException($"The cache of {blockSize}-byte blocks holds {walked} blocks but counts {cache.Count}.");
        }
    }

    // A free or resize whose pointer and size are not a live block's start and size class (the
    // live block map said no): a double free when the block lies in a free block of its class or a
    // larger one (in a tree or a cache), else an interior pointer or a size of another class.
    // Nothing was changed before the call.
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotLiveSlow(byte* pointer, nuint blockSize)
    {
        nuint address = (nuint)pointer;
        for (int k = _trees.ClassOf(Math.Min(blockSize, _maximumBlockSize)); k <= _topClass; k++)
        {
            nuint container = address & ~(_trees.BlockSizeOf(k) - 1);
            if (container < _start)
            {
                break;
            }

            if (_trees.Tree(k).Find(container) != null || _caches.Cache(k).Contains(container))
            {
                Allocator.ThrowDoubleFree(Name, pointer);
            }
        }

        throw new ArgumentException(
            $"The pointer 0x{address:X} is not the start of a live {blockSize}-byte block of this {Name}: it points inside a block, or the size given is of another size class than the allocation's.",
            nameof(pointer));
    }

    private void CheckSizeClass(int sizeClass)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeClass);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sizeClass, _topClass);
    }
}
