using static AllocHosting.Allocators.NumaHeapBlock;

namespace AllocHosting.Allocators;

// The free lists of a heap: one per size class, address-sorted, doubly linked through the free
// blocks themselves, with a bit per non-empty list; and the per-class caches of unmerged blocks.
//
// Threading: every member runs under the heap's lock.
internal sealed unsafe partial class NumaHeap
{
    /// <summary>Blocks a free walks at most to find its block's place in address order.</summary>
    public const int SortedWalkLimit = 64;

    // Address order: appended when above the tail (frees in rising order, the split tails of a
    // segment), else placed by a walk from the head of at most SortedWalkLimit blocks; a block
    // whose place lies deeper goes where the walk stopped, so a long list is sorted in runs and
    // first fit is approximate beyond its first SortedWalkLimit blocks (the price of O(1) frees).
    private void Insert(nuint block, nuint size)
    {
        int c = ClassOf(size);
        nuint tail = _tails[c];
        if (tail == 0)
        {
            Next(block) = 0;
            Previous(block) = 0;
            _heads[c] = block;
            _tails[c] = block;
            _nonEmpty[c >> 6] |= 1UL << c;
        }
        else if (block > tail)
        {
            Next(tail) = block;
            Previous(block) = tail;
            Next(block) = 0;
            _tails[c] = block;
        }
        else
        {
            nuint after = _heads[c];
            for (int steps = 0; after < block && steps < SortedWalkLimit; steps++)
            {
                after = Next(after);
            }

            nuint before = Previous(after);
            Previous(block) = before;
            Next(block) = after;
            Previous(after) = block;
            if (before == 0)
            {
                _heads[c] = block;
            }
            else
            {
                Next(before) = block;
            }
        }

        _hot.FreeBytes += (long)size;
        _hot.FreeBlockCount++;
    }

    private void Unlink(nuint block)
    {
        nuint size = SizeOf(block);
        int c = ClassOf(size);
        nuint next = Next(block);
        nuint previous = Previous(block);
        if (previous == 0)
        {
            _heads[c] = next;
        }
        else
        {
            Next(previous) = next;
        }

        if (next == 0)
        {
            _tails[c] = previous;
        }
        else
        {
            Previous(next) = previous;
        }

        if (_heads[c] == 0)
        {
            _nonEmpty[c >> 6] &= ~(1UL << c);
        }

        _hot.FreeBytes -= (long)size;
        _hot.FreeBlockCount--;
    }

    private int NextNonEmpty(int c)
    {
        for (int word = c >> 6; word < _nonEmpty.Length; word++)
        {
            ulong bits = _nonEmpty[word];
            if (word == c >> 6)
            {
                bits &= ~0UL << (c & 63);
            }

            if (bits != 0)
            {
                return (word << 6) + System.Numerics.BitOperations.TrailingZeroCount(bits);
            }
        }

        return -1;
    }

    private void FlushCache()
    {
        for (int c = 0; c < _cache.Length; c++)
        {
            for (nuint block = _cache[c]; block != 0;)
            {
                nuint next = Next(block);
                FreeToLists(block);
                block = next;
            }

            _cache[c] = 0;
            _cacheCount[c] = 0;
        }

        _hot.CachedBytes = 0;
    }
}
