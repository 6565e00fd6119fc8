using static AllocHosting.Allocators.NumaHeapBlock;

namespace AllocHosting.Allocators;

// What a heap does for the thread caches (NumaHeapThreadCache): batches of blocks of one size class
// taken and given back under one lock, and the counts of a thread that moves to another heap.
//
// Threading: each member takes the heap's lock.
internal sealed unsafe partial class NumaHeap
{
    /// <summary>
    /// A thread cache's refill, under one lock: takes back the blocks of <paramref name="returned"/>
    /// (as <see cref="ReturnFromThreadCache"/>), allocates a block for the caller as <see cref="Allocate"/>
    /// does (with the alignment of 16 the caches serve; stamped and counted), and fills
    /// <paramref name="fill"/> (which may overlap <paramref name="returned"/>) with up to its length more
    /// blocks of the request's class that hold the request: from the class's cache, then from the lists
    /// (never mapping a segment for them). Those stay in use for the heap, with a zero stamp, and are
    /// not counted: the thread counts what it hands out. Returns the caller's pointer, or 0 (nothing
    /// filled) when the heap cannot map a segment.
    /// </summary>
    public nuint AllocateAndFill(nuint requested, nuint usable, ReadOnlySpan<nuint> returned, Span<nuint> fill, out int filled)
    {
        nuint need = usable + HeaderSize;
        int c = ClassOf(need);
        filled = 0;
        _hot.Lock.Enter();
        foreach (nuint back in returned)
        {
            CacheOrMergeLocked(back);
        }

        nuint block = TakeForCallerLocked(requested, usable, HeaderSize);
        if (block == 0)
        {
            _hot.Lock.Exit();
            return 0;
        }

        while (filled < fill.Length)
        {
            nuint extra = TakeCachedLocked(c, need);
            if (extra == 0)
            {
                extra = TakeFromLists(need, HeaderSize);
                if (extra == 0)
                {
                    break;
                }

                if (ClassOf(SizeOf(extra)) != c)
                {
                    // Carved with a tail too small to split off, into the next class: it goes back.
                    FreeToLists(extra);
                    break;
                }

                Stamp(extra) = 0;
            }

            fill[filled++] = extra;
        }

        _hot.Lock.Exit();
        return block + HeaderSize;
    }

    /// <summary>Takes back blocks of this heap that a thread cache held (in use, zero stamp, uncounted): into the heap's cache where it has room, else merged into the lists.</summary>
    public void ReturnFromThreadCache(ReadOnlySpan<nuint> blocks)
    {
        _hot.Lock.Enter();
        foreach (nuint block in blocks)
        {
            CacheOrMergeLocked(block);
        }

        _hot.Lock.Exit();
    }

    /// <summary>Adds the counts of a thread cache that moves to another heap (they were this heap's blocks).</summary>
    public void AddCounters(in AllocatorCounters counters)
    {
        _hot.Lock.Enter();
        _hot.Counters.Add(counters);
        _hot.Lock.Exit();
    }

    // Under the lock: the most recently cached block of class c if it holds need bytes (one of an exact
    // class always does), or 0.
    private nuint TakeCachedLocked(int c, nuint need)
    {
        nuint block = _cache[c];
        if (block == 0 || SizeOf(block) < need)
        {
            return 0;
        }

        _cache[c] = Next(block);
        _cacheCount[c]--;
        _hot.CachedBytes -= SizeOf(block);
        return block;
    }
}
