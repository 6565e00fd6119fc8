using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Switchable;

/// <summary>
/// One page of a <see cref="ThreadHeap"/>: a run of 64 KiB units of a segment cut into blocks of
/// one size class. See the data layout in ThreadHeap.cs.
/// </summary>
internal sealed unsafe class SlabPage
{
    /// <summary>
    /// The page every class starts with: it has no blocks, so the allocation fast path finds its
    /// free list empty and takes the slow path, and nothing ever writes to it.
    /// </summary>
    public static readonly SlabPage Empty = new();

    // ---- Immutable after construction; read by any thread. ----

    /// <summary>The heap that owns the page (null only for <see cref="Empty"/>).</summary>
    public readonly ThreadHeap? Heap;

    /// <summary>The allocator of the heap (null only for <see cref="Empty"/>), kept here so the free path needs no further load.</summary>
    public readonly ThreadLocalAllocator? Allocator;

    /// <summary>The segment the page lies in.</summary>
    public readonly HeapSegment? Segment;

    /// <summary>The address of the first block (64 KiB aligned).</summary>
    public readonly nuint Start;

    /// <summary>The end of the last whole block: <c>Start + capacity × BlockSize</c>.</summary>
    public readonly nuint Limit;

    /// <summary>The size of every block, the usable size of its class.</summary>
    public readonly nuint BlockSize;

    /// <summary><c>2⁶⁴ / BlockSize</c> rounded up: <c>offset × it ≤ it − 1</c> exactly when the (32-bit) offset is a multiple of the block size (Lemire's divisibility test, no division).</summary>
    public readonly ulong DivisibilityMagic;


    /// <summary>How many of the page's blocks a <see cref="RemoteFreeBatch"/> holds before pushing them: <see cref="RemoteFreeBatch.MaximumBlocks"/>, fewer for blocks so large that they would exceed <see cref="RemoteFreeBatch.MaximumBytes"/>, at least 1.</summary>
    public readonly int RemoteBatchLimit;

    /// <summary>The first unit of the segment the page covers, and how many.</summary>
    public readonly int FirstUnit;

    /// <summary>The number of units.</summary>
    public readonly int UnitCount;

    // ---- Owner thread only (once the heap is abandoned: only under ThreadHeap.Lock). ----

    // The owner writes these on every allocation and local free, while remote freers read the
    // immutable fields above on every free: padding keeps the two (and the remote list head, and
    // whatever object the GC places next to this one, e.g. another thread's page) on different
    // cache lines, so that neither side's traffic evicts the other's.
    private OwnerFields _owner;

    // ---- Any thread. ----

    /// <summary>Remote free list: blocks freed by other threads, pushed with a compare-and-swap, taken whole by the owner with one exchange.</summary>
    public PaddedAddress Remote;

    /// <summary>Local free list: the first free block, whose first word links to the next (0 ends it). Owner.</summary>
    public ref nuint Free
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _owner.Free;
    }

    /// <summary>The first block never handed out: blocks from here to <see cref="Limit"/> are carved into <see cref="Free"/> in batches. Owner.</summary>
    public ref nuint Unformatted
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _owner.Unformatted;
    }

    /// <summary>Blocks handed out and not yet given back to <see cref="Free"/> (blocks freed by other threads count until drained). Owner; read racily by statistics.</summary>
    public ref int Used
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _owner.Used;
    }

    public SlabPage(ThreadHeap heap, HeapSegment segment, int firstUnit, int unitCount, int classIndex)
    {
        Heap = heap;
        Allocator = heap.Allocator;
        Segment = segment;
        FirstUnit = firstUnit;
        UnitCount = unitCount;
        BlockSize = (nuint)SlabSizeClasses.SizeOf(classIndex);
        DivisibilityMagic = (ulong.MaxValue / BlockSize) + 1;
        RemoteBatchLimit = (int)Math.Clamp(RemoteFreeBatch.MaximumBytes / BlockSize, 1, (nuint)RemoteFreeBatch.MaximumBlocks);
        Start = segment.Start + ((nuint)firstUnit << SlabSizeClasses.UnitShift);
        nuint capacity = ((nuint)unitCount << SlabSizeClasses.UnitShift) / BlockSize;
        Limit = Start + (capacity * BlockSize);
        Unformatted = Start;
    }

    private SlabPage()
    {
    }

    /// <summary>Whether <paramref name="address"/> is the start of one of this page's blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsBlockStart(nuint address)
    {
        nuint offset = address - Start;
        return offset < Limit - Start && (ulong)(uint)offset * DivisibilityMagic <= DivisibilityMagic - 1;
    }

    /// <summary>
    /// Pushes a list of blocks freed by threads that do not own the page, linked from
    /// <paramref name="first"/> to <paramref name="last"/> through their first words, with one
    /// compare-and-swap (a full fence: see ThreadLocalAllocator.FlushRemoteBatch). Lock-free; ABA
    /// cannot arise because the owner only ever takes the whole list.
    /// </summary>
    public void PushRemote(nuint first, nuint last)
    {
        nuint head = Volatile.Read(ref Remote.Value);
        while (true)
        {
            *(nuint*)last = head;
            nuint seen = Interlocked.CompareExchange(ref Remote.Value, first, head);
            if (seen == head)
            {
                return;
            }

            head = seen;
        }
    }

    /// <summary>A word with 128 bytes of padding on either side (two cache lines, as adjacent-line prefetchers pair lines), so that remote pushes do not evict the owner's fields.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 264)]
    public struct PaddedAddress
    {
        /// <summary>The head of the list (0 when empty).</summary>
        [FieldOffset(128)]
        public nuint Value;
    }

    // The owner's hot fields, 128 bytes clear of anything else on either side.
    [StructLayout(LayoutKind.Explicit, Size = 280)]
    private struct OwnerFields
    {
        [FieldOffset(128)]
        public nuint Free;

        [FieldOffset(136)]
        public nuint Unformatted;

        [FieldOffset(144)]
        public int Used;
    }
}

/// <summary>
/// A segment of a <see cref="ThreadHeap"/>: one region aligned to its size, registered in
/// <see cref="OwnerRegistry"/> with the <see cref="ThreadLocalAllocator"/> as owner (so that
/// address-routed frees elsewhere find it), divided into 64 KiB units.
/// </summary>
internal sealed unsafe class HeapSegment(ThreadHeap heap, nuint start, nuint size)
{
    /// <summary>The heap that owns the segment.</summary>
    public readonly ThreadHeap Heap = heap;

    /// <summary>The first byte of the region.</summary>
    public readonly nuint Start = start;

    /// <summary>The region's size, a power of two.</summary>
    public readonly nuint Size = size;

    /// <summary>
    /// The page covering each unit, or null for a free unit. Written by the owner (under the heap's
    /// lock once abandoned) before any block of the page is handed out, so a thread freeing a live
    /// block always reads the page the block came from.
    /// </summary>
    public readonly SlabPage?[] Units = new SlabPage?[(int)(size >> SlabSizeClasses.UnitShift)];

    /// <summary>Pages in the segment. Owner only.</summary>
    public int PageCount;

    /// <summary>Finds <paramref name="count"/> consecutive free units (first fit). Owner only.</summary>
    public bool TryTakeUnits(int count, out int first)
    {
        int run = 0;
        for (int i = 0; i < Units.Length; i++)
        {
            run = Units[i] is null ? run + 1 : 0;
            if (run == count)
            {
                first = i - count + 1;
                return true;
            }
        }

        first = -1;
        return false;
    }
}

/// <summary>The page each size class of a heap allocates from, inline in the heap object (one load fewer than an array).</summary>
[InlineArray(SlabSizeClasses.Count)]
internal struct PageTable
{
    private SlabPage _first;
}

/// <summary>
/// Blocks one thread freed into one page of another thread's heap, not yet pushed on the page's
/// remote list: consecutive remote frees into the same page are linked here with plain writes and
/// pushed with one compare-and-swap per batch instead of one per block. Referenced only from a
/// [ThreadStatic] field of <see cref="ThreadLocalAllocator"/>, so it is touched by its thread alone
/// and, after that thread died, by its finaliser alone.
/// </summary>
/// <remarks>
/// A batched block still counts as used by its page (<see cref="SlabPage.Used"/>), so neither its page
/// nor its heap (even an abandoned one) is released while a batch holds it. The batch is pushed
/// when it is full (<see cref="MaximumBlocks"/> blocks or <see cref="MaximumBytes"/>), when its
/// thread frees a block of another page, takes an allocation slow path or calls
/// <see cref="ThreadLocalAllocator.Collect"/>, and by the finaliser once its thread died; until
/// then the owner cannot reuse those blocks.
/// </remarks>
internal sealed unsafe class RemoteFreeBatch
{
    /// <summary>The most blocks a batch holds.</summary>
    public const int MaximumBlocks = 32;

    /// <summary>The most bytes a batch holds (it is pushed on reaching them): large blocks are pushed one or two at a time, where a compare-and-swap is small beside touching the block.</summary>
    public const nuint MaximumBytes = 32 * 1024;

    // Written on every remote free of its thread: padded like the page's owner fields, so that
    // the reads other threads make of objects the GC placed next to this one do not miss.
    private State _state;

    /// <summary>Blocks held now (tests).</summary>
    public int Count => _state.Count;

    /// <summary>Adds a block of <paramref name="page"/> (its stamp written, its heap not abandoned when last checked), pushing the batch when it is full or held another page's blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(SlabPage page, nuint block)
    {
        if (page != _state.Page)
        {
            StartFor(page, block);
        }

        *(nuint*)block = _state.First;
        _state.First = block;
        if (++_state.Count >= page.RemoteBatchLimit)
        {
            Flush();
        }
    }

    /// <summary>Pushes the batch on its page's remote list (its thread only).</summary>
    public void Flush()
    {
        SlabPage? page = _state.Page;
        if (page is null)
        {
            return;
        }

        (nuint first, nuint last) = Take();
        ThreadHeap heap = page.Heap!;

        // A heap released by Dispose took the blocks' memory with it (the allocator was in use
        // while disposed, which its contract forbids): there is nothing left to give back to.
        if (heap.ServingAllocator is null)
        {
            return;
        }

        PushAndCheckAbandoned(page, heap, first, last);
    }

    ~RemoteFreeBatch()
    {
        try
        {
            FlushAfterThreadExit();
        }
#pragma warning disable CA1031 // An exception escaping a finaliser ends the process; the blocks then simply stay used.
        catch (Exception)
        {
        }
#pragma warning restore CA1031
    }

    // The push is a full fence (lock cmpxchg) that pairs with the exchange in ThreadHeap.Abandon,
    // a store-then-load on each side (Dekker): either the abandoning thread, draining after setting
    // its flag, sees these blocks, or this thread, loading the flag after its push, sees the flag and
    // collects. A release/acquire pair would not order this thread's store before its load.
    private static void PushAndCheckAbandoned(SlabPage page, ThreadHeap heap, nuint first, nuint last)
    {
        page.PushRemote(first, last);
        if (heap.IsAbandoned)
        {
            heap.CollectAbandoned();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void StartFor(SlabPage page, nuint block)
    {
        Flush();
        _state.Page = page;
        _state.Last = block;
    }

    private (nuint First, nuint Last) Take()
    {
        (nuint first, nuint last) = (_state.First, _state.Last);
        _state.Page = null;
        _state.First = 0;
        _state.Last = 0;
        _state.Count = 0;
        return (first, last);
    }

    // On the finaliser thread, after the batch's thread died: nothing else touches the batch, but
    // Dispose may release the heap concurrently, so the check and the push are made under its lock.
    private void FlushAfterThreadExit()
    {
        SlabPage? page = _state.Page;
        if (page is null)
        {
            return;
        }

        (nuint first, nuint last) = Take();
        ThreadHeap heap = page.Heap!;
        lock (heap.Lock)
        {
            if (heap.ServingAllocator is null)
            {
                return;
            }

            page.PushRemote(first, last);
        }

        if (heap.IsAbandoned)
        {
            heap.CollectAbandoned();
        }
    }

    [StructLayout(LayoutKind.Explicit, Size = 296)]
    private struct State
    {
        // The page every block of the batch belongs to; null when empty.
        [FieldOffset(128)]
        public SlabPage? Page;

        // The blocks, linked through their first words from First; Last's link is set by the push.
        [FieldOffset(136)]
        public nuint First;

        [FieldOffset(144)]
        public nuint Last;

        [FieldOffset(152)]
        public int Count;
    }
}
