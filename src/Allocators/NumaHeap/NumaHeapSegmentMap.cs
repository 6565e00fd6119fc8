using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// Finds the heap whose segment covers an address, in two dependent loads and without touching the
/// address: how a <see cref="NumaHeapAllocator"/> free, from any thread, finds the block's own heap,
/// and refuses a foreign pointer instead of reading memory that may not be mapped.
/// </summary>
/// <remarks>
/// A two-level radix table over 48-bit addresses, one entry per segment-sized unit (segments are
/// aligned to their size, so one unit is one segment): the root is indexed by the upper half of the
/// unit number, each leaf (created on first use, kept until the allocator is dropped) by the lower
/// half. One table per allocator. Entries are written under a lock when a heap maps or unmaps a
/// segment and read without one: a segment is entered before any of its blocks is handed out and
/// removed only when none is live, so a thread freeing a live block always finds its heap.
/// </remarks>
internal sealed class NumaHeapSegmentMap
{
    private const int AddressBits = 48;

    private readonly int _shift;
    private readonly int _leafBits;
    private readonly nuint _leafMask;
    private readonly NumaHeap?[]?[] _root;
    private readonly Lock _lock = new();

    /// <summary>Creates an empty map for segments of <paramref name="segmentSize"/> bytes (a power of two).</summary>
    public NumaHeapSegmentMap(nuint segmentSize)
    {
        _shift = System.Numerics.BitOperations.Log2(segmentSize);
        int unitBits = AddressBits - _shift;
        int rootBits = unitBits / 2;
        _leafBits = unitBits - rootBits;
        _leafMask = ((nuint)1 << _leafBits) - 1;
        _root = new NumaHeap?[]?[1 << rootBits];
    }

    /// <summary>The heap whose segment covers <paramref name="address"/>, or null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public NumaHeap? Find(nuint address)
    {
        if ((ulong)address >> AddressBits != 0)
        {
            return null;
        }

        nuint unit = address >> _shift;
        NumaHeap?[]? leaf = Volatile.Read(ref _root[(int)(unit >> _leafBits)]);
        return leaf is null ? null : Volatile.Read(ref leaf[(int)(unit & _leafMask)]);
    }

    /// <summary>Enters <paramref name="heap"/> as the owner of the segment at <paramref name="start"/> (null removes it).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The segment lies beyond 48-bit addresses.</exception>
    public void Set(nuint start, NumaHeap? heap)
    {
        if ((ulong)start >> AddressBits != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(start), start, "A heap segment must lie below 2^48.");
        }

        nuint unit = start >> _shift;
        lock (_lock)
        {
            ref NumaHeap?[]? leaf = ref _root[(int)(unit >> _leafBits)];
            if (leaf is null)
            {
                Volatile.Write(ref leaf, new NumaHeap?[1 << _leafBits]);
            }

            Volatile.Write(ref leaf![(int)(unit & _leafMask)], heap);
        }
    }
}
