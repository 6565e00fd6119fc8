namespace AllocHosting.Allocators;

// Diagnostics: what the allocator obtained, how its free memory is split, and the full invariant
// check. None of it is on an allocation path.
public sealed unsafe partial class BTreeAllocator
{
    /// <summary>Bytes of regions obtained from the source (what blocks are carved from).</summary>
    public nuint RegionBytes => _regionBytes;

    /// <summary>Bytes of node pages obtained from the source for the two B-trees.</summary>
    public nuint NodeBytes => _pool.ObtainedBytes;

    /// <summary>Every byte obtained from the source: <see cref="RegionBytes"/> plus <see cref="NodeBytes"/>. Over the bytes in use, the memory overhead.</summary>
    public nuint ObtainedBytes => _regionBytes + _pool.ObtainedBytes;

    /// <summary>The number of regions obtained.</summary>
    public int RegionCount => _regions.Count;

    /// <summary>The number of free blocks (each as large as its neighbours allow: free blocks never touch). O(1).</summary>
    public long FreeBlockCount => _bySize.Count;

    /// <summary>The size of the largest free block, 0 when there is none: the largest request served without a new region (at an alignment of at most <see cref="Granule"/>). O(log free blocks).</summary>
    public nuint LargestFreeBlock
    {
        get
        {
            BTreeCursor last = _bySize.LowerBound(new BTreeKey(nuint.MaxValue, nuint.MaxValue));
            return last.MovePrevious() ? last.Key.First : 0;
        }
    }

    /// <summary>
    /// Checks every invariant, for tests and debugging: both B-trees' own invariants; the blocks of
    /// the address tree tile the regions exactly (granule-aligned, no gap, no overlap, nothing
    /// outside); no two free blocks touch; every free block, and nothing else, is in the size tree;
    /// the live blocks add up to the bytes in use. O(blocks × log blocks); changes nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant is violated (the allocator is corrupted).</exception>
    public void Validate()
    {
        _bySize.Validate();
        _blocks.Validate();

        // The spans blocks may cover: the regions trimmed to the granule, back-to-back ones joined
        // (a free block may run from one into the next).
        var spans = new List<(nuint Start, nuint End)>();
        foreach (MemoryRange region in _regions)
        {
            nuint start = Allocator.AlignUp(region.From, Granule);
            nuint end = Allocator.AlignDown(region.To, Granule);
            if (spans.Count > 0 && spans[^1].End == start)
            {
                spans[^1] = (spans[^1].Start, end);
            }
            else
            {
                spans.Add((start, end));
            }
        }

        long free = 0;
        long live = 0;
        int span = -1;
        nuint expected = 0;
        bool previousFree = false;
        BTreeCursor cursor = _blocks.First();
        for (bool more = cursor.IsValid; more; more = cursor.MoveNext())
        {
            nuint address = cursor.Key.First;
            nuint size = cursor.Key.Second & ~FreeFlag;
            bool isFree = (cursor.Key.Second & FreeFlag) != 0;
            if (span < 0 || address != expected)
            {
                Check(span < 0 || expected == spans[span].End, $"the blocks of the span at 0x{(span < 0 ? 0 : spans[span].Start):X} end at 0x{expected:X}, not at its end");
                span++;
                Check(span < spans.Count && address == spans[span].Start, $"the block at 0x{address:X} starts a region's span");
                previousFree = false;
            }

            Check(size != 0 && Allocator.IsAligned(size, Granule), $"the block at 0x{address:X} has {size} bytes, a positive multiple of the granule");
            Check(size <= spans[span].End - address, $"the block at 0x{address:X} of {size} bytes ends inside its span");
            Check(!(isFree && previousFree), $"the free block at 0x{address:X} was merged with the free block before it");
            if (isFree)
            {
                Check(_bySize.Find(new BTreeKey(size, address)).IsValid, $"the free block at 0x{address:X} of {size} bytes is in the size tree");
                free++;
            }
            else
            {
                live += (long)size;
            }

            previousFree = isFree;
            expected = address + size;
        }

        Check(spans.Count == (span < 0 ? 0 : span + 1) && (span < 0 || expected == spans[span].End), "the blocks cover every region to its end");
        Check(free == _bySize.Count, $"the size tree holds {_bySize.Count} entries for {free} free blocks");
        Check(live == _counters.BytesInUse, $"the live blocks hold {live} bytes, the statistics count {_counters.BytesInUse}");
    }

    private static void Check(bool condition, string invariant)
    {
        if (!condition)
        {
            throw new InvalidOperationException($"BTreeAllocator invariant violated: {invariant}.");
        }
    }
}
