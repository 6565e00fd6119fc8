using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;
using static AllocHosting.Allocators.NumaHeapBlock;

namespace AllocHosting.Allocators;

/// <summary>
/// One heap of a <see cref="NumaHeapAllocator"/>, DPDK's <c>malloc_heap</c>: segments obtained from
/// a memory source bound to one NUMA node, carved into variable-size blocks with boundary tags
/// (<see cref="NumaHeapBlock"/>), the free ones on size-segregated, address-sorted, doubly linked
/// lists, all under one spin lock.
/// </summary>
/// <remarks>
/// <para>
/// Threads: every member that reads or writes blocks, lists, caches or counters takes
/// <see cref="NumaHeapSpinLock"/> first and releases it before returning or throwing, so any thread
/// may allocate from or free into any heap. The hot fields (the lock and the counters) sit between
/// paddings of their own, so two heaps used by two threads never share a cache line.
/// </para>
/// <para>
/// Invariants (checked by <see cref="Validate"/>): the blocks of a segment tile it from its first
/// block to its end tag; no two free (listed) blocks are adjacent (a free merges with its free
/// neighbours at once); every free block is on the list of its size's class, and each list is
/// sorted by address, so a walk takes the lowest block that fits (address-ordered first fit, which
/// keeps long-lived blocks low and free space in large runs at the top; a free places its block by a
/// walk of at most <see cref="SortedWalkLimit"/> blocks, so a longer list is sorted in runs). Cached
/// blocks (per class up to <see cref="CachedBlockLimit"/>, at most <see cref="CacheDepth"/> each and
/// <see cref="CacheByteLimit"/> in all) are freed blocks not yet merged: an alloc+free of one size costs a pop and a push, and they are merged
/// (flushed) before the heap maps another segment, so the heap grows only when it would have to
/// with eager merging.
/// </para>
/// </remarks>
internal sealed unsafe partial class NumaHeap
{
    /// <summary>Blocks one exact class keeps cached, unmerged.</summary>
    public const int CacheDepth = 32;

    /// <summary>Bytes of cached blocks one heap keeps at most.</summary>
    public const nuint CacheByteLimit = 1024 * 1024;

    /// <summary>Where a segment's first block starts: the segment's first 64 bytes are not used, so that no block starts at the segment's base.</summary>
    public const nuint FirstBlockOffset = 64;

    private readonly NumaHeapSegmentMap _map;
    private readonly nuint _segmentSize;
    private readonly int _maximumSegments;
    private readonly ulong _key;
    private readonly nuint[] _heads = new nuint[ClassCount];
    private readonly nuint[] _tails = new nuint[ClassCount];
    private readonly ulong[] _nonEmpty = new ulong[(ClassCount + 63) / 64];
    private readonly nuint[] _cache = new nuint[CachedClassCount];
    private readonly int[] _cacheCount = new int[CachedClassCount];

    // Each segment: its aligned start, and what was obtained from the source (released on Dispose).
    private readonly List<(nuint Start, nuint Obtained, nuint ObtainedSize)> _segments = [];

    private Hot _hot;

    // Set by Release (the allocator's Dispose): no segment is mapped any more, so every request fails.
    private bool _closed;

    /// <summary>Creates an empty heap for <paramref name="node"/>; it maps its first segment on its first allocation.</summary>
    public NumaHeap(int node, int index, NumaPolicy policy, IMemorySource source, NumaHeapSegmentMap map, nuint segmentSize, int maximumSegments, ulong key)
    {
        Node = node;
        Index = index;
        Policy = policy;
        Source = source;
        _map = map;
        _segmentSize = segmentSize;
        _maximumSegments = maximumSegments;
        _key = key;
    }

    /// <summary>The NUMA node this heap's memory is bound to (the topology's id).</summary>
    public int Node { get; }

    /// <summary>The heap's position in its allocator's list.</summary>
    public int Index { get; }

    /// <summary>The policy of <see cref="Source"/>.</summary>
    public NumaPolicy Policy { get; }

    /// <summary>Where segments come from.</summary>
    public IMemorySource Source { get; }

    /// <summary>The heap's lock (also taken by the allocator around a validated free).</summary>
    public ref NumaHeapSpinLock Lock => ref _hot.Lock;

    /// <summary>
    /// Allocates a block of <paramref name="usable"/> bytes (from <see cref="UsableSizeOf"/>) whose
    /// caller's bytes are aligned to <paramref name="alignment"/> (at most a page), or returns 0 when
    /// the heap cannot map another segment.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nuint Allocate(nuint requested, nuint usable, nuint alignment)
    {
        _hot.Lock.Enter();
        nuint block = TakeForCallerLocked(requested, usable, alignment);
        _hot.Lock.Exit();
        return block == 0 ? 0 : block + HeaderSize;
    }

    // Under the lock: a block of usable bytes aligned as asked, stamped and counted, or 0 when the heap
    // cannot map another segment. The class's most recently freed block when it is large enough (a
    // cached block of an exact class always is; one of a quarter-power class may be smaller) and
    // aligned as asked; else the lists.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nuint TakeForCallerLocked(nuint requested, nuint usable, nuint alignment)
    {
        nuint need = usable + HeaderSize;
        nuint block;
        int c;
        if (need <= CachedBlockLimit && (block = _cache[c = ClassOf(need)]) != 0 && SizeOf(block) >= need
            && ((block + HeaderSize) & (alignment - 1)) == 0)
        {
            _cache[c] = Next(block);
            _cacheCount[c]--;
            _hot.CachedBytes -= SizeOf(block);
        }
        else
        {
            block = TakeSlow(need, alignment);
            if (block == 0)
            {
                return 0;
            }
        }

        Stamp(block) = MakeStamp(block, usable, _key);
        _hot.Counters.Allocated(requested, usable);
        return block;
    }

    /// <summary>
    /// Checks, with the lock held, that <paramref name="block"/> is a live block and that
    /// <paramref name="size"/> names it: 0 when it is, 1 when it is not a live block (interior,
    /// foreign within the segment, freed), 2 when the size's usable size is not the block's.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int CheckLive(nuint block, nuint size)
    {
        ulong stamp = Stamp(block);
        if ((uint)stamp != (uint)MakeStamp(block, 0, _key) || (Tag(block) & InUse) == 0)
        {
            return 1;
        }

        return UsableSizeOf(size) == UsableOf(stamp) ? 0 : 2;
    }

    /// <summary>The usable size recorded for a live block (after <see cref="CheckLive"/> accepted it).</summary>
    public static nuint RecordedUsable(nuint block) => UsableOf(Stamp(block));

    /// <summary>Frees a block <see cref="CheckLive"/> accepted; the caller holds the lock and releases it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FreeLocked(nuint block)
    {
        _hot.Counters.Freed(UsableOf(Stamp(block)));
        Stamp(block) = 0;
        CacheOrMergeLocked(block);
    }

    // Under the lock: a freed block (in use, zero stamp) into its class's cache where there is room,
    // else merged with its free neighbours into the lists.
    private void CacheOrMergeLocked(nuint block)
    {
        nuint size = SizeOf(block);
        if (size <= CachedBlockLimit)
        {
            int c = ClassOf(size);
            if (_cacheCount[c] < CacheDepth && _hot.CachedBytes + size <= CacheByteLimit)
            {
                Next(block) = _cache[c];
                _cache[c] = block;
                _cacheCount[c]++;
                _hot.CachedBytes += size;
                return;
            }
        }

        FreeToLists(block);
    }

    /// <summary>
    /// Grows a block <see cref="CheckLive"/> accepted to <paramref name="usable"/> bytes without
    /// moving it: within its own size, or by taking the free block after it (splitting off what is
    /// left). The caller holds the lock.
    /// </summary>
    public bool TryGrowLocked(nuint block, nuint usable)
    {
        nuint need = usable + HeaderSize;
        nuint size = SizeOf(block);
        nuint oldUsable = UsableOf(Stamp(block));
        if (need > size)
        {
            nuint next = block + size;
            if (IsInUse(next) || size + SizeOf(next) < need)
            {
                return false;
            }

            nuint total = size + SizeOf(next);
            Unlink(next);
            SetUsedSize(block, total, need);
        }

        Stamp(block) = MakeStamp(block, usable, _key);
        _hot.Counters.Resized((long)usable - (long)oldUsable);
        return true;
    }

    /// <summary>
    /// Shrinks a block <see cref="CheckLive"/> accepted to <paramref name="usable"/> bytes in place:
    /// the tail, merged with a free block after it, goes back to the lists when it can hold a block.
    /// Always succeeds. The caller holds the lock.
    /// </summary>
    public void ShrinkLocked(nuint block, nuint usable)
    {
        nuint need = usable + HeaderSize;
        nuint size = SizeOf(block);
        nuint oldUsable = UsableOf(Stamp(block));
        if (size - need >= MinimumBlockSize)
        {
            nuint next = block + size;
            nuint tail = size - need;
            if (!IsInUse(next))
            {
                tail += SizeOf(next);
                Unlink(next);
            }

            Tag(block) = need | InUse | (Tag(block) & PreviousInUse);
            WriteFree(block + need, tail, previousInUse: true);
        }

        Stamp(block) = MakeStamp(block, usable, _key);
        _hot.Counters.Resized((long)usable - (long)oldUsable);
    }

    /// <summary>A snapshot of the heap, taken under its lock, with what the thread caches on it add (their bytes in use and the blocks they hold, read without their owners' cooperation).</summary>
    public NumaHeapSnapshot Snapshot(long threadBytesInUse = 0, int threadCachedBlocks = 0)
    {
        _hot.Lock.Enter();
        int cached = threadCachedBlocks;
        foreach (int count in _cacheCount)
        {
            cached += count;
        }

        var snapshot = new NumaHeapSnapshot(
            Node, Index, Policy, _segments.Count, (long)_segments.Count * (long)_segmentSize, _hot.Counters.BytesInUse + threadBytesInUse,
            _hot.FreeBytes, _hot.FreeBlockCount, cached, _hot.Lock.ContentionCount);
        _hot.Lock.Exit();
        return snapshot;
    }

    /// <summary>The heap's counters, read under its lock.</summary>
    public AllocatorCounters ReadCounters()
    {
        _hot.Lock.Enter();
        AllocatorCounters counters = _hot.Counters;
        _hot.Lock.Exit();
        return counters;
    }

    /// <summary>Bytes of segments mapped (read without the lock: approximate while threads run).</summary>
    public long MappedBytes => (long)Volatile.Read(ref _hot.SegmentCount) * (long)_segmentSize;

    /// <summary>Merges every cached block into the lists.</summary>
    public void Flush()
    {
        _hot.Lock.Enter();
        FlushCache();
        _hot.Lock.Exit();
    }

    /// <summary>Merges every cached block into the lists, then unmaps every segment that is one free block. Returns the bytes unmapped.</summary>
    public long Trim()
    {
        _hot.Lock.Enter();
        try
        {
            FlushCache();
            long released = 0;
            for (int i = _segments.Count - 1; i >= 0; i--)
            {
                (nuint start, nuint obtained, nuint obtainedSize) = _segments[i];
                nuint first = start + FirstBlockOffset;
                if (!IsInUse(first) && SizeOf(first) == _segmentSize - FirstBlockOffset - HeaderSize)
                {
                    Unlink(first);
                    _map.Set(start, null);
                    Source.Release((byte*)obtained, obtainedSize);
                    _segments.RemoveAt(i);
                    _hot.SegmentCount--;
                    released += (long)_segmentSize;
                }
            }

            return released;
        }
        finally
        {
            _hot.Lock.Exit();
        }
    }

    /// <summary>Unmaps every segment (every block becomes invalid); the heap is empty afterwards. Only when no thread uses the heap.</summary>
    public void Release()
    {
        _hot.Lock.Enter();
        try
        {
            foreach ((nuint start, nuint obtained, nuint obtainedSize) in _segments)
            {
                _map.Set(start, null);
                Source.Release((byte*)obtained, obtainedSize);
            }

            _segments.Clear();
            _closed = true;
            _hot.SegmentCount = 0;
            Array.Clear(_heads);
            Array.Clear(_tails);
            Array.Clear(_nonEmpty);
            Array.Clear(_cache);
            Array.Clear(_cacheCount);
            _hot.CachedBytes = 0;
            _hot.FreeBytes = 0;
            _hot.FreeBlockCount = 0;
        }
        finally
        {
            _hot.Lock.Exit();
        }
    }

    // ---- Under the lock. ----

    // The cache had no block: first fit in the lists; then merge the caches and search again; then
    // map a segment and search once more.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private nuint TakeSlow(nuint need, nuint alignment)
    {
        nuint block = TakeFromLists(need, alignment);
        if (block == 0 && _hot.CachedBytes != 0)
        {
            FlushCache();
            block = TakeFromLists(need, alignment);
        }

        if (block == 0 && AddSegment())
        {
            block = TakeFromLists(need, alignment);
        }

        return block;
    }

    // Walks the lists from the request's class upwards: in its own class a block may be too small
    // (skipped); a block too large is split. With an alignment above 16 the block's start moves up
    // to the first aligned position that leaves either nothing or a whole free block before it.
    private nuint TakeFromLists(nuint need, nuint alignment)
    {
        for (int c = NextNonEmpty(ClassOf(need)); c >= 0; c = NextNonEmpty(c + 1))
        {
            for (nuint block = _heads[c]; block != 0; block = Next(block))
            {
                nuint size = SizeOf(block);
                if (size < need)
                {
                    continue;
                }

                nuint lead = 0;
                if (alignment > HeaderSize)
                {
                    lead = Allocator.AlignUp(block + HeaderSize, alignment) - HeaderSize - block;
                    if (lead != 0 && lead < MinimumBlockSize)
                    {
                        lead = Allocator.AlignUp(block + HeaderSize + MinimumBlockSize, alignment) - HeaderSize - block;
                    }

                    if (lead > size || size - lead < need)
                    {
                        continue;
                    }
                }

                return Carve(block, size, lead, need);
            }
        }

        return 0;
    }

    // Takes a listed free block: the lead (if any) stays free, the block proper is marked in use, and
    // a tail large enough for a block goes back to the lists.
    private nuint Carve(nuint block, nuint size, nuint lead, nuint need)
    {
        Unlink(block);
        bool previousInUse = (Tag(block) & PreviousInUse) != 0;
        if (lead != 0)
        {
            WriteFree(block, lead, previousInUse);
            block += lead;
            size -= lead;
            previousInUse = false;
        }

        Tag(block) = (previousInUse ? PreviousInUse : 0) | InUse;
        SetUsedSize(block, size, need);
        return block;
    }

    // A block in use spanning `available` bytes keeps `need` of them when the rest can be a free
    // block (which then goes to the lists), else all of them.
    private void SetUsedSize(nuint block, nuint available, nuint need)
    {
        nuint flags = Tag(block) & (PreviousInUse | InUse);
        if (available - need >= MinimumBlockSize)
        {
            Tag(block) = need | flags;
            WriteFree(block + need, available - need, previousInUse: true);
        }
        else
        {
            Tag(block) = available | flags;
            Tag(block + available) |= PreviousInUse;
        }
    }

    // Merges a block (not listed) with its free neighbours and lists the result.
    private void FreeToLists(nuint block)
    {
        nuint size = SizeOf(block);
        bool previousInUse = (Tag(block) & PreviousInUse) != 0;
        nuint next = block + size;
        if (!IsInUse(next))
        {
            size += SizeOf(next);
            Unlink(next);
        }

        if (!previousInUse)
        {
            nuint previousSize = *(nuint*)(block - 8);
            block -= previousSize;
            size += previousSize;
            Unlink(block);
            previousInUse = (Tag(block) & PreviousInUse) != 0;
        }

        WriteFree(block, size, previousInUse);
    }

    private void WriteFree(nuint block, nuint size, bool previousInUse)
    {
        Tag(block) = size | (previousInUse ? PreviousInUse : 0);
        Stamp(block) = 0;
        Footer(block, size) = size;
        Tag(block + size) &= ~PreviousInUse;
        Insert(block, size);
    }

    // Maps one segment, enters it in the map and lists its one free block (up to the end tag).
    private bool AddSegment()
    {
        if (_closed || _segments.Count >= _maximumSegments)
        {
            return false;
        }

        nuint start, obtained, obtainedSize;
        if (Source is MemoryMapSource mapped)
        {
            if (!mapped.TryObtainAligned(_segmentSize, _segmentSize, out byte* region))
            {
                return false;
            }

            (start, obtained, obtainedSize) = ((nuint)region, (nuint)region, _segmentSize);
        }
        else
        {
            if (!Source.TryObtain(2 * _segmentSize, out byte* region))
            {
                return false;
            }

            (start, obtained, obtainedSize) = (Allocator.AlignUp((nuint)region, _segmentSize), (nuint)region, 2 * _segmentSize);
        }

        _map.Set(start, this);
        _segments.Add((start, obtained, obtainedSize));
        _hot.SegmentCount++;
        nuint end = start + _segmentSize - HeaderSize;
        Tag(end) = InUse;
        Stamp(end) = 0;
        WriteFree(start + FirstBlockOffset, end - start - FirstBlockOffset, previousInUse: true);
        return true;
    }

    // What every operation writes, between paddings: the lock and the counters.
    private struct Hot
    {
#pragma warning disable CS0169 // Never read nor written: the padding keeps other heaps' hot fields off these lines.
        private CacheLinePadding _before;
#pragma warning restore CS0169
        public NumaHeapSpinLock Lock;
        public AllocatorCounters Counters;
        public nuint CachedBytes;
        public long FreeBytes;
        public long FreeBlockCount;
        public int SegmentCount;
#pragma warning disable CS0169
        private CacheLinePadding _after;
#pragma warning restore CS0169
    }
}
