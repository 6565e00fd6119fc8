using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// One size class's cache of free blocks for deferred coalescing in a
/// <see cref="MultipleBinarySearchTreeAllocator"/>: a LIFO list of blocks freed without merging,
/// threaded through their first word, so that an alloc+free ping-pong costs a push and a pop
/// instead of a split and a merge.
/// </summary>
/// <remarks>
/// The cache owns no memory and knows nothing of stamps or trees: the allocator keeps every
/// cached block aligned to its size, stamped, and in no tree and no other cache. Embedded by value
/// in its owner and always used through a reference; never copy it.
/// </remarks>
internal unsafe struct FreeBlockCache
{
    // The most recently cached block (null when empty); each block's word 0 links the next.
    private nuint* _head;
    private int _count;

    /// <summary>The most recently cached block (null when the cache is empty): where a walk with <see cref="Next"/> starts.</summary>
    public readonly nuint* First => _head;

    /// <summary>The number of cached blocks.</summary>
    public readonly int Count => _count;

    /// <summary>The most blocks the cache keeps; <see cref="TryAdd"/> refuses beyond it.</summary>
    public int Limit { readonly get; set; }

    /// <summary>The block cached before <paramref name="block"/>, or null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static nuint* Next(nuint* block) => (nuint*)block[0];

    /// <summary>Takes the most recently cached block when it is aligned to <paramref name="alignment"/>; otherwise null, changing nothing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nuint* TryTake(nuint alignment)
    {
        nuint* block = _head;
        if (block != null && Allocator.IsAligned((nuint)block, alignment))
        {
            _head = (nuint*)block[0];
            _count--;
            return block;
        }

        return null;
    }

    /// <summary>Caches <paramref name="block"/> unless the cache is full (then returns false, changing nothing).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAdd(nuint* block)
    {
        if (_count >= Limit)
        {
            return false;
        }

        block[0] = (nuint)_head;
        _head = block;
        _count++;
        return true;
    }

    /// <summary>Takes the most recently cached block whatever its alignment, or null when empty.</summary>
    public nuint* Pop()
    {
        nuint* block = _head;
        if (block != null)
        {
            _head = (nuint*)block[0];
            _count--;
        }

        return block;
    }

    /// <summary>Whether the block at <paramref name="address"/> is cached (walks the list).</summary>
    public readonly bool Contains(nuint address)
    {
        for (nuint* block = _head; block != null; block = (nuint*)block[0])
        {
            if ((nuint)block == address)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Unlinks the cached block at <paramref name="address"/>, which must be cached.</summary>
    public void Remove(nuint address)
    {
        nuint* previous = null;
        for (nuint* block = _head; block != null; previous = block, block = (nuint*)block[0])
        {
            if ((nuint)block == address)
            {
                if (previous == null)
                {
                    _head = (nuint*)block[0];
                }
                else
                {
                    previous[0] = block[0];
                }

                _count--;
                return;
            }
        }

        Debug.Fail("the block to remove is not in the cache");
    }

    /// <summary>Forgets every cached block (their memory is being re-carved or released); keeps the limit.</summary>
    public void Clear()
    {
        _head = null;
        _count = 0;
    }
}
