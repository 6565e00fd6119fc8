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

    /// <summary>The size class.</summary>
    public readonly int ClassIndex;

    /// <summary>The first unit of the segment the page covers, and how many.</summary>
    public readonly int FirstUnit;

    /// <summary>The number of units.</summary>
    public readonly int UnitCount;

    // ---- Owner thread only (once the heap is abandoned: only under ThreadHeap.Lock). ----

    /// <summary>Local free list: the first free block, whose first word links to the next (0 ends it).</summary>
    public nuint Free;

    /// <summary>The first block never handed out: blocks from here to <see cref="Limit"/> are carved into <see cref="Free"/> in batches.</summary>
    public nuint Unformatted;

    /// <summary>Blocks handed out and not yet given back to <see cref="Free"/> (remote frees count until drained).</summary>
    public int Used;

    // ---- Any thread. ----

    /// <summary>Remote free list: blocks freed by other threads, pushed with a compare-and-swap, taken whole by the owner with one exchange.</summary>
    public PaddedAddress Remote;

    public SlabPage(ThreadHeap heap, HeapSegment segment, int firstUnit, int unitCount, int classIndex)
    {
        Heap = heap;
        Allocator = heap.Allocator;
        Segment = segment;
        FirstUnit = firstUnit;
        UnitCount = unitCount;
        ClassIndex = classIndex;
        BlockSize = (nuint)SlabSizeClasses.SizeOf(classIndex);
        DivisibilityMagic = (ulong.MaxValue / BlockSize) + 1;
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

    /// <summary>Pushes a block freed by a thread that does not own the page (lock-free; ABA cannot arise because the owner only ever takes the whole list).</summary>
    public void PushRemote(nuint block)
    {
        nuint head = Volatile.Read(ref Remote.Value);
        while (true)
        {
            *(nuint*)block = head;
            nuint seen = Interlocked.CompareExchange(ref Remote.Value, block, head);
            if (seen == head)
            {
                return;
            }

            head = seen;
        }
    }

    /// <summary>A word with 64 bytes of padding on either side (a cache line of its own wherever the object lands), so that remote pushes do not evict the owner's fields.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 136)]
    public struct PaddedAddress
    {
        /// <summary>The head of the list (0 when empty).</summary>
        [FieldOffset(64)]
        public nuint Value;
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
