using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

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
    private CacheLinePadded<OwnerFields> _owner;

    // ---- Any thread. ----

    /// <summary>Remote free list: blocks freed by other threads, pushed with a compare-and-swap, taken whole by the owner with one exchange.</summary>
    public CacheLinePadded<nuint> Remote;

    /// <summary>Local free list: the first free block, whose first word links to the next (0 ends it). Owner.</summary>
    public ref nuint Free
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _owner.Value.Free;
    }

    /// <summary>The first block never handed out: blocks from here to <see cref="Limit"/> are carved into <see cref="Free"/> in batches. Owner.</summary>
    public ref nuint Unformatted
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _owner.Value.Unformatted;
    }

    /// <summary>Blocks handed out and not yet given back to <see cref="Free"/> (blocks freed by other threads count until drained). Owner; read racily by statistics.</summary>
    public ref int Used
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref _owner.Value.Used;
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
    /// compare-and-swap (a full fence, which the abandoned-heap check after it relies on: see RemoteFreeBatch.Flush). Lock-free; ABA
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

    // The owner's hot fields (padded in place by CacheLinePadded).
    private struct OwnerFields
    {
        public nuint Free;

        public nuint Unformatted;

        public int Used;
    }
}
