using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

// Data layout of ThreadLocalAllocator (mimalloc-like size-class slabs)
// ===================================================================
//
//   ThreadLocalAllocator ──(one per OS thread that allocates)──► ThreadHeap
//   ThreadHeap ──► HeapSegment*   each a region of SegmentSize bytes (default 4 MiB), aligned to its
//                                 size, from the heap's own memory source (NUMA policy of the creating
//                                 thread), registered in OwnerRegistry with the allocator as owner
//   HeapSegment ──► Units[]       one entry per 64 KiB unit: the SlabPage covering it, or null (free);
//                                 SlabPageMap holds the same entries by address, for frees
//   SlabPage                      1..16 consecutive units cut into blocks of ONE size class
//                                 (SlabSizeClasses: 16 B steps to 128 B, then 4 per power of two to
//                                 256 KiB); pages of classes ≤ 16 KiB are one unit, larger ones hold 4 blocks
//   ThreadHeap.Current[class]     the page the fast path allocates from (SlabPage.Empty when none)
//
// Why size-class slabs rather than the tree allocator (MultipleBinarySearchTreeAllocator): the
// fast paths here are a free-list pop and push on a page found by two loads, with no search, no
// splitting and no coalescing, which is what jemalloc and mimalloc do for the same sizes and what
// the targets (≤ jemalloc at 64 B–1 KiB, ≤ ArrayPool.Shared up to 256 KiB) require; a tree
// allocation is O(log n) plus splitting, and a remote free into a tree needs a lock or a deferred
// queue anyway. Rough Stopwatch figures on the development machine (one thread, alloc+touch+free):
// about 10.5–11 ns at 64 B–256 KiB against 9–10 ns for ArrayPool.Shared and 13–26 ns for glibc.
//
// Metadata lives in managed objects, not in the segments: SlabPageMap (a two-level radix table
// with 64 KiB units) yields a freed pointer's SlabPage in two loads without touching the pointer,
// so a foreign pointer is rejected instead of faulting, and a buffer overrun in user memory cannot
// corrupt the page table. Segments are also registered in OwnerRegistry with the allocator as
// owner, for routers (SwitchableAllocator) that only know addresses.
//
// A free block holds in its first word the link of the list it is on and in its second word a
// stamp (allocator key XOR its address); allocation clears the stamp, so a block freed twice is
// recognised by its stamp (a live block would need those 8 bytes to equal a random 64-bit value).
//
// Ownership rules
// ---------------
//   * Statistics cost the fast path one page counter (Used) and two heap counters (allocations,
//     requested bytes), all owner-only; bytes in use are summed over the pages when read.
//   * Fields marked "owner" are read and written by the heap's thread without locks or atomics.
//   * Other threads free into SlabPage.Remote (lock-free push); the owner takes the whole list with
//     one exchange when a page it needs has no local free block, or in Collect. A freeing thread
//     first links consecutive remote frees into one page in its own RemoteFreeBatch (plain writes)
//     and pushes the batch with one compare-and-swap: when it holds 32 blocks or 32 KiB, when the
//     thread frees into another page, takes an allocation slow path or calls Collect, and (by a
//     finaliser) after the thread died. Batched blocks still count in Used, so nothing they lie in
//     is released early.
//   * Cache lines: the fields a thread writes on every operation (a page's Free/Unformatted/Used,
//     a heap's two counters) and the remote list head sit in structs padded by 128 bytes on each
//     side (two lines: adjacent-line prefetchers pair them), because the GC places managed objects
//     of different threads next to each other, and because remote freers read a page's immutable
//     fields on every free. Nothing allocator-wide is written on a fast path.
//   * When the owning thread dies its HeapLifetime (referenced only from a [ThreadStatic] field) is
//     finalised and the heap is abandoned: from then on every owner field is touched only under Lock,
//     by whichever thread frees into the heap. Once no block is live its segments are unregistered and
//     released. A thread that pushed remote frees re-checks the abandoned flag after its push (both
//     sides use full fences: each stores then loads what the other stored, which release/acquire
//     does not order), so a block pushed while the heap was being abandoned is never stranded.

/// <summary>The per-thread heap of a <see cref="ThreadLocalAllocator"/>: its segments, pages and counters.</summary>
internal sealed unsafe class ThreadHeap
{
    // Blocks carved from a page's never-used tail per batch: about one OS page of memory.
    private const int CarveBatchBytes = 4096;

    // ---- Immutable. ----

    /// <summary>The allocator the heap belongs to.</summary>
    public readonly ThreadLocalAllocator Allocator;

    /// <summary>The NUMA policy of the heap's memory, chosen on the creating thread.</summary>
    public readonly NumaPolicy Policy;

    /// <summary>The node the heap's bytes are attributed to: the policy's single node, else -1.</summary>
    public readonly int Node;

    /// <summary>Serialises every owner field once the heap is abandoned, and its release.</summary>
    public readonly Lock Lock = new();

    private readonly IMemorySource _source;
    private readonly nuint _segmentSize;
    private readonly nuint _stampKey;
    private readonly int _maximumSegments;

    // ---- Owner (under Lock once abandoned). ----

    /// <summary>The page each class allocates from; <see cref="SlabPage.Empty"/> when it has none.</summary>
    public PageTable Current;

    // Statistics: only two counters are kept on the fast path. Blocks in use are the pages' Used
    // counts (summed on read); deallocations are allocations minus blocks in use.

    // Written on every allocation: padded so that no other thread's hot data (another heap, a page
    // the GC placed next to this object) and none of the fields other threads read here share
    // their cache lines.
    private CacheLinePadded<HotCounters> _hot;

    /// <summary>Blocks handed out by the heap since creation. Owner; read racily by <see cref="ThreadLocalAllocator.Statistics"/>.</summary>
    public ref long AllocationCount
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _hot.Value.AllocationCount;
    }

    /// <summary>Sum of the sizes requested from the heap since creation. Owner; read racily.</summary>
    public ref long TotalBytesAllocated
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _hot.Value.TotalBytesAllocated;
    }

    /// <summary>Bytes of segments held. Read racily by other threads.</summary>
    public long MappedBytes;

    private readonly List<SlabPage>[] _pages;

    // Every page of the heap, replaced (never modified) when a page is added or removed, so that
    // other threads can sum the pages' Used counts safely.
    private SlabPage[] _allPages = [];
    private readonly List<HeapSegment> _segments = [];

    // ---- Any thread. ----

    // The allocator while the heap serves; null once released, so that stale thread-static caches miss.
    private volatile ThreadLocalAllocator? _servingAllocator;

    // 1 once the owning thread died. Interlocked / volatile.
    private int _abandoned;

    // Under Lock.
    private bool _released;

    public ThreadHeap(ThreadLocalAllocator allocator, NumaPolicy policy, IMemorySource source, nuint segmentSize, int maximumSegments, nuint stampKey)
    {
        _maximumSegments = maximumSegments;
        Allocator = allocator;
        Policy = policy;
        Node = policy.SingleNode ?? -1;
        _source = source;
        _segmentSize = segmentSize;
        _stampKey = stampKey;
        _servingAllocator = allocator;
        _pages = new List<SlabPage>[SlabSizeClasses.Count];
        for (int i = 0; i < SlabSizeClasses.Count; i++)
        {
            Current[i] = SlabPage.Empty;
            _pages[i] = [];
        }
    }

    /// <summary>The allocator while the heap serves, null once it is released.</summary>
    public ThreadLocalAllocator? ServingAllocator => _servingAllocator;

    /// <summary>Whether the owning thread died.</summary>
    public bool IsAbandoned => Volatile.Read(ref _abandoned) != 0;

    /// <summary>The memory source of the heap's segments.</summary>
    public IMemorySource Source => _source;

    /// <summary>Segments held (owner).</summary>
    public int SegmentCount => _segments.Count;

    /// <summary>
    /// The allocation slow path (owner): a block of class <paramref name="classIndex"/> once the
    /// current page is refilled (its remote frees drained, its tail carved, another page of the
    /// class or a new one), or null when no segment can be obtained.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public byte* AllocateSlow(int classIndex, nuint size)
    {
        SlabPage page = Current[classIndex];
        if (page.Free == 0)
        {
            SlabPage? refilled = Refill(classIndex);
            if (refilled is null)
            {
                return null;
            }

            page = refilled;
        }

        return Pop(page, page.Free, size);
    }

    /// <summary>
    /// Takes <paramref name="block"/>, the head of <paramref name="page"/>'s local free list (not 0),
    /// clears its free stamp and counts the allocation (owner). The one slab pop: the allocation fast
    /// path of <see cref="ThreadLocalAllocator"/> inlines it after its own load of
    /// <see cref="SlabPage.Free"/>, and <see cref="AllocateSlow"/> calls it after a refill.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Pop(SlabPage page, nuint block, nuint size)
    {
        page.Free = *(nuint*)block;
        ((nuint*)block)[1] = 0;
        page.Used++;
        AllocationCount++;
        TotalBytesAllocated += (long)size;
        return (byte*)block;
    }

    /// <summary>Gives a block back to its page's local free list (owner, or under Lock when abandoned). The stamp is already written.</summary>
    public void FreeLocal(SlabPage page, nuint block)
    {
        *(nuint*)block = page.Free;
        page.Free = block;
        page.Used--;
    }

    /// <summary>Bytes and blocks in use now (any thread; approximate while the owner runs). Blocks other threads freed count until drained.</summary>
    public (long Bytes, long Blocks) CountInUse()
    {
        long bytes = 0;
        long blocks = 0;
        foreach (SlabPage page in Volatile.Read(ref _allPages))
        {
            int used = Volatile.Read(ref page.Used);
            bytes += used * (long)page.BlockSize;
            blocks += used;
        }

        return (bytes, blocks);
    }

    /// <summary>Frees a block of an abandoned heap (any thread): under the lock, releasing the heap when it was the last live block.</summary>
    public void FreeAbandoned(SlabPage page, nuint block)
    {
        lock (Lock)
        {
            FreeLocal(page, block);
            if (page.Used == 0)
            {
                ReleaseIfEmpty();
            }
        }
    }

    /// <summary>Called after a remote push found the heap abandoned: drains and releases it if that was its last live block.</summary>
    public void CollectAbandoned()
    {
        lock (Lock)
        {
            ReleaseIfEmpty();
        }
    }

    /// <summary>Marks the heap abandoned (its thread died) and releases it at once if no block is live. Called by the finaliser of its <see cref="HeapLifetime"/>.</summary>
    public void Abandon()
    {
        Interlocked.Exchange(ref _abandoned, 1);
        lock (Lock)
        {
            ReleaseIfEmpty();
        }
    }

    /// <summary>
    /// Takes every remote free, gives empty pages back to their segments and releases empty
    /// segments (owner). Afterwards the heap's counters are exact, but for blocks other threads still hold in their batches.
    /// </summary>
    public void Collect()
    {
        for (int c = 0; c < _pages.Length; c++)
        {
            foreach (SlabPage page in _pages[c])
            {
                DrainRemote(page);
            }
        }

        ReleaseEmptyPages();
        for (int i = _segments.Count - 1; i >= 0; i--)
        {
            if (_segments[i].PageCount == 0)
            {
                ReleaseSegment(_segments[i]);
            }
        }
    }

    /// <summary>Releases every segment whatever is live (allocator disposal), under Lock.</summary>
    public void ReleaseAll()
    {
        lock (Lock)
        {
            ReleaseCore();
        }
    }

    // Finds a page of the class with a free block: the current one (after draining its remote
    // frees or carving its tail), another page of the class, or a new page. The scan is linear in
    // the class's pages and runs once per page-full of allocations; a heap holding very many full
    // pages of one class pays it (mimalloc keeps full pages on a separate queue instead, which
    // needs a flag remote freers set: a possible refinement).
    private SlabPage? Refill(int classIndex)
    {
        SlabPage current = Current[classIndex];
        if (current != SlabPage.Empty && TryReplenish(current))
        {
            return current;
        }

        List<SlabPage> pages = _pages[classIndex];
        for (int i = 0; i < pages.Count; i++)
        {
            SlabPage page = pages[i];
            if (page != current && TryReplenish(page))
            {
                Current[classIndex] = page;
                return page;
            }
        }

        SlabPage? fresh = NewPage(classIndex);
        if (fresh is null)
        {
            return null;
        }

        TryReplenish(fresh);
        Current[classIndex] = fresh;
        return fresh;
    }

    private bool TryReplenish(SlabPage page)
    {
        if (page.Free != 0)
        {
            return true;
        }

        if (DrainRemote(page) != 0)
        {
            return true;
        }

        if (page.Unformatted < page.Limit)
        {
            Carve(page);
            return true;
        }

        return false;
    }

    // Moves the page's remote frees to its local list; returns how many.
    private int DrainRemote(SlabPage page)
    {
        if (Volatile.Read(ref page.Remote.Value) == 0)
        {
            return 0;
        }

        nuint list = Interlocked.Exchange(ref page.Remote.Value, 0);
        int count = 1;
        nuint tail = list;
        for (nuint next = *(nuint*)tail; next != 0; next = *(nuint*)tail)
        {
            tail = next;
            count++;
        }

        *(nuint*)tail = page.Free;
        page.Free = list;
        page.Used -= count;
        return count;
    }

    // Links a batch of never-used blocks into the free list, stamped as free.
    private void Carve(SlabPage page)
    {
        nuint size = page.BlockSize;
        nuint count = Math.Max(1, Math.Min((page.Limit - page.Unformatted) / size, CarveBatchBytes / size));
        nuint first = page.Unformatted;
        nuint last = first + ((count - 1) * size);
        for (nuint block = first; block <= last; block += size)
        {
            ((nuint*)block)[0] = block == last ? page.Free : block + size;
            ((nuint*)block)[1] = _stampKey ^ block;
        }

        page.Free = first;
        page.Unformatted = last + size;
    }

    private SlabPage? NewPage(int classIndex)
    {
        int units = SlabSizeClasses.UnitsOf(classIndex);
        HeapSegment? segment = FindRoom(units, out int first);
        if (segment is null && ReleaseEmptyPages() > 0)
        {
            segment = FindRoom(units, out first);
        }

        if (segment is null)
        {
            segment = ObtainSegment();
            if (segment is null || !segment.TryTakeUnits(units, out first))
            {
                return null;
            }
        }

        var page = new SlabPage(this, segment, first, units, classIndex);
        for (int u = first; u < first + units; u++)
        {
            segment.Units[u] = page;
        }

        segment.PageCount++;
        _pages[classIndex].Add(page);
        Volatile.Write(ref _allPages, [.. _allPages, page]);
        SlabPageMap.Set(page, page);
        return page;
    }

    private HeapSegment? FindRoom(int units, out int first)
    {
        foreach (HeapSegment segment in _segments)
        {
            if (segment.TryTakeUnits(units, out first))
            {
                return segment;
            }
        }

        first = -1;
        return null;
    }

    private HeapSegment? ObtainSegment()
    {
        if (_segments.Count >= _maximumSegments)
        {
            return null;
        }

        byte* region;
        bool obtained = _source is MemoryMapSource mapped
            ? mapped.TryObtainAligned(_segmentSize, _segmentSize, out region)
            : _source.TryObtain(_segmentSize, out region);
        if (!obtained)
        {
            return null;
        }

        var segment = new HeapSegment((nuint)region, _segmentSize);
        try
        {
            OwnerRegistry.Register(segment.Start, segment.Size, Allocator);
        }
        catch
        {
            _source.Release(region, _segmentSize);
            throw;
        }

        _segments.Add(segment);
        MappedBytes += (long)_segmentSize;
        return segment;
    }

    // Gives every page without live blocks back to its segment; returns how many.
    private int ReleaseEmptyPages()
    {
        int released = 0;
        var remaining = new List<SlabPage>(_allPages.Length);
        for (int c = 0; c < _pages.Length; c++)
        {
            List<SlabPage> pages = _pages[c];
            for (int i = pages.Count - 1; i >= 0; i--)
            {
                SlabPage page = pages[i];
                DrainRemote(page);
                if (page.Used != 0)
                {
                    remaining.Add(page);
                    continue;
                }

                pages.RemoveAt(i);
                if (Current[c] == page)
                {
                    Current[c] = SlabPage.Empty;
                }

                HeapSegment segment = page.Segment!;
                SlabPageMap.Set(page, null);
                Array.Clear(segment.Units, page.FirstUnit, page.UnitCount);
                segment.PageCount--;
                released++;
            }
        }

        if (released != 0)
        {
            Volatile.Write(ref _allPages, remaining.ToArray());
        }

        return released;
    }

    private void ReleaseSegment(HeapSegment segment)
    {
        for (int u = 0; u < segment.Units.Length; u++)
        {
            if (segment.Units[u] is { } page && page.FirstUnit == u)
            {
                SlabPageMap.Set(page, null);
            }
        }

        OwnerRegistry.Unregister(segment.Start, segment.Size, Allocator);
        _source.Release((byte*)segment.Start, segment.Size);
        _segments.Remove(segment);
        MappedBytes -= (long)segment.Size;
    }

    // Under Lock, abandoned heaps only.
    private void ReleaseIfEmpty()
    {
        if (_released)
        {
            return;
        }

        for (int c = 0; c < _pages.Length; c++)
        {
            foreach (SlabPage page in _pages[c])
            {
                DrainRemote(page);
            }
        }

        if (CountInUse().Blocks == 0)
        {
            ReleaseCore();
        }
    }

    // Under Lock.
    private void ReleaseCore()
    {
        if (_released)
        {
            return;
        }

        _released = true;
        _servingAllocator = null;
        for (int i = _segments.Count - 1; i >= 0; i--)
        {
            ReleaseSegment(_segments[i]);
        }

        for (int c = 0; c < _pages.Length; c++)
        {
            _pages[c].Clear();
            Current[c] = SlabPage.Empty;
        }

        Volatile.Write(ref _allPages, []);

        Allocator.OnHeapReleased(this);
    }
}
