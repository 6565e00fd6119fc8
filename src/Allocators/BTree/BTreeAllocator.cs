using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// A best-fit allocator of variable-size blocks whose free blocks are indexed by B-trees with
/// wide nodes in their own pages of native memory (the seed's "B-tree backed allocator"): one tree
/// by (size, address) to find the smallest block that fits, one by address, of every block, to
/// find a block's neighbours and to check every free. It grows by taking regions from its memory
/// source.
/// </summary>
/// <remarks>
/// <para>
/// <b>What it is for.</b> Long-lived allocations of many different sizes where memory matters
/// more than the last nanosecond: a request takes its size rounded up to <see cref="Granule"/>
/// (16 bytes), not a power of two, and a free block is merged at once with its free neighbours,
/// so that the free memory stays in as few, as large blocks as the live blocks allow. Compared with
/// <see cref="MultipleBinarySearchTreeAllocator"/>: no power-of-two rounding and no fixed region
/// (requests of any size, the region grows), at the price of two tree searches per operation
/// instead of a cache pop. See docs/benchmarks.md, "Issue 14", for when to pick which.
/// </para>
/// <code>
/// using var heap = new BTreeAllocator(NativeMemorySource.Shared);
/// byte* p = heap.Allocate(100, 16);               // a 112-byte block
/// p = heap.GrowingReallocate(p, 100, 200, 16);    // in place when the block after it is free
/// heap.Deallocate(p, 200, 16);
/// </code>
/// <para>
/// <b>Layout.</b> Block memory holds only the caller's bytes: there are no headers, boundary tags or
/// links in the blocks. The metadata lives in 4 KiB node pages obtained from the same source
/// (<see cref="NodeBytes"/>): the size tree holds an entry (size, address) per free block; the
/// address tree an entry (address, size | free flag) per block, free or live, and the blocks of a
/// region tile it without gaps. So the neighbours of a block are the entries before and after its
/// own, and a free checks the caller's pointer against an exact record. A page holds 254 entries
/// per leaf and 169 keys per branch: a million blocks are three levels deep.
/// </para>
/// <para>
/// <b>Allocation</b> takes the first entry of the size tree not below (size, 0): the smallest free
/// block that holds the request, the lowest of that size. A larger alignment looks at the next few
/// candidates for one whose aligned start still fits, then takes the smallest block that fits at
/// any alignment. The block is split: the part before the aligned start (if any) and the part after
/// the request stay free. When no block fits, a region of <see cref="RegionSize"/> bytes, or as many
/// as the request needs (an over-size request gets a region of its own), is taken from the source
/// and added as a free block, merged with any free block that ends where it begins. A free merges
/// the block with the free blocks before and after it. Regions are given back on Dispose only.
/// </para>
/// <para>
/// <b>Never.</b> It never touches an allocated block's bytes, never moves a block except in a
/// reallocation that cannot be done in place, and never obtains more than
/// <see cref="MaximumCapacity"/> bytes of regions (node pages not counted). Not thread-safe, like
/// <see cref="MultipleBinarySearchTreeAllocator"/>: one thread at a time, or a lock around it.
/// </para>
/// <para>
/// <b>Checks.</b> Every free, reallocation or resize in place looks its pointer up in the address
/// tree and throws <see cref="ArgumentException"/>, changing nothing, for a pointer that is not the
/// start of a block (foreign, or inside a block), a block already free (double free), and a size
/// whose rounding to the granule differs from the block's (larger than its usable size, or smaller
/// than its usable size allows). The alignment is not recorded (a free needs none). A free or resize
/// needs at most one new node page; when the source refuses it, the call throws the source's
/// <see cref="OutOfMemoryException"/> before changing anything.
/// </para>
/// <para>
/// <b>Statistics.</b> <see cref="AllocatorStatistics.BytesInUse"/> counts whole blocks (the usable
/// sizes); <see cref="AllocatorStatistics.Capacity"/> is <see cref="MaximumCapacity"/>, or
/// <see langword="null"/> when only the source limits it. <see cref="ObtainedBytes"/> (regions plus
/// node pages) over the bytes in use is the memory overhead; <see cref="Validate"/> checks every
/// invariant.
/// </para>
/// </remarks>
public sealed unsafe partial class BTreeAllocator : AllocatorBase
{
    /// <summary>The unit of block sizes and the smallest alignment of every block (16 bytes).</summary>
    public const nuint Granule = 16;

    /// <summary>The default size of the regions taken from the source (1 MiB).</summary>
    public const nuint DefaultRegionSize = 1u << 20;

    // A free block's entry in the address tree carries this bit in its size word (sizes are
    // multiples of the granule, so the bit is otherwise zero).
    private const nuint FreeFlag = 1;

    // An aligned request looks at this many best-fit candidates before it takes the smallest block
    // that fits at any alignment: bounded work, nearly best fit.
    private const int AlignedProbes = 32;

    private readonly IMemorySource _source;
    private readonly nuint _regionSize;
    private readonly nuint _maximumCapacity;
    private readonly BTreeNodePool _pool;

    // Invariants: every block of every region has one entry in _blocks; every free block (flagged
    // there) has one entry in _bySize and no free neighbour (free blocks that touch are merged).
    private readonly BTree<BTreeSizeOrder> _bySize;
    private readonly BTree<BTreeAddressOrder> _blocks;

    // The regions obtained, as (obtained start, obtained end), sorted by address: Owns and Dispose.
    private readonly List<MemoryRange> _regions = [];
    private nuint _regionBytes;

    // BytesInUse is the sum of the live blocks' sizes.
    private AllocatorCounters _counters;
    private bool _disposed;

    /// <summary>Creates an allocator that takes regions of <see cref="DefaultRegionSize"/> bytes from <paramref name="source"/> as it needs them, without a limit of its own.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    public BTreeAllocator(IMemorySource source)
        : this(source, DefaultRegionSize, Allocator.MaximumSize)
    {
    }

    /// <summary>Creates an allocator that takes regions of <paramref name="regionSize"/> bytes from <paramref name="source"/> as it needs them, without a limit of its own.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="regionSize"/> is zero or too large.</exception>
    public BTreeAllocator(IMemorySource source, nuint regionSize)
        : this(source, regionSize, Allocator.MaximumSize)
    {
    }

    /// <summary>
    /// Creates an allocator that takes regions of <paramref name="regionSize"/> bytes (rounded up to
    /// the source's granularity; more for a larger request) from <paramref name="source"/> as it
    /// needs them, up to <paramref name="maximumCapacity"/> bytes of regions in all. Nothing is
    /// obtained before the first allocation.
    /// </summary>
    /// <param name="source">Where regions and node pages come from; everything is given back on <see cref="AllocatorBase.Dispose()"/>.</param>
    /// <param name="regionSize">The size of an ordinary region.</param>
    /// <param name="maximumCapacity">The most bytes of regions the allocator obtains; <see cref="Allocator.MaximumSize"/> for no limit but the source's.</param>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="regionSize"/> is zero or larger than <paramref name="maximumCapacity"/>, or <paramref name="maximumCapacity"/> is larger than <see cref="Allocator.MaximumSize"/>.</exception>
    public BTreeAllocator(IMemorySource source, nuint regionSize, nuint maximumCapacity)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (maximumCapacity > Allocator.MaximumSize)
        {
            throw new ArgumentOutOfRangeException(nameof(maximumCapacity), maximumCapacity, $"The maximum capacity must be at most {Allocator.MaximumSize} bytes (Allocator.MaximumSize, no limit of the allocator's own).");
        }

        if (regionSize == 0 || regionSize > maximumCapacity)
        {
            throw new ArgumentOutOfRangeException(nameof(regionSize), regionSize, $"The region size must be between 1 and the maximum capacity ({maximumCapacity} bytes).");
        }

        _source = source;
        _regionSize = Allocator.AlignUp(regionSize, Math.Max(source.Granularity, Granule));
        _maximumCapacity = maximumCapacity;
        _pool = new BTreeNodePool(source);
        _bySize = new BTree<BTreeSizeOrder>(_pool, 64, 64);
        _blocks = new BTree<BTreeAddressOrder>(_pool, 64, 64);
    }

    /// <summary>The size of an ordinary region (rounded up to the source's granularity).</summary>
    public nuint RegionSize => _regionSize;

    /// <summary>The most bytes of regions the allocator obtains (<see cref="Allocator.MaximumSize"/>: no limit of its own).</summary>
    public nuint MaximumCapacity => _maximumCapacity;

    /// <inheritdoc />
    public override AllocatorStatistics Statistics =>
        _counters.ToStatistics(_maximumCapacity == Allocator.MaximumSize ? null : (long)_maximumCapacity, FailureCount);

    /// <summary>Whether <paramref name="pointer"/> lies in a region of this allocator (not whether it is a live block).</summary>
    public override bool Owns(byte* pointer) => RegionIndex((nuint)pointer) >= 0;

    /// <inheritdoc />
    /// <remarks>The best fit from the size tree, split; a new region when none fits (<see cref="AllocateSlow"/>).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        // The size check also keeps the roundings below from overflowing.
        if (size > _maximumCapacity || !ReserveNodes(2, 2))
        {
            return null;
        }

        nuint blockSize = Allocator.AlignUp(size, Granule);
        BTreeCursor fit = FindFit(blockSize, alignment);
        if (!fit.IsValid)
        {
            return AllocateSlow(size, blockSize, alignment);
        }

        return Take(fit.Key, size, blockSize, alignment);
    }

    /// <inheritdoc />
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        nuint blockSize = LiveBlockSize(pointer, size, out BTreeCursor entry);
        ReserveNodesOrThrow(1, 0);
        AddFree(entry, (nuint)pointer, blockSize);
        _counters.Freed(blockSize);
    }

    /// <summary>Grows in place when the new size rounds to the same block, or when the block after this one is free and large enough: its front is taken.</summary>
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint oldBlock = LiveBlockSize(pointer, currentSize, out BTreeCursor entry);
        if (newSize > _maximumCapacity)
        {
            return false;
        }

        nuint newBlock = Allocator.AlignUp(newSize, Granule);
        if (newBlock == oldBlock)
        {
            return true;
        }

        nuint address = (nuint)pointer;
        nuint extra = newBlock - oldBlock;
        BTreeCursor next = entry;
        if (!next.MoveNext() || next.Key.First != address + oldBlock || (next.Key.Second & FreeFlag) == 0
            || (next.Key.Second & ~FreeFlag) < extra || !ReserveNodes(1, 1))
        {
            return false;
        }

        // The cursors stay valid: a reservation changes no tree.
        nuint nextSize = next.Key.Second & ~FreeFlag;
        _blocks.Replace(entry, new BTreeKey(address, newBlock));
        _bySize.Remove(new BTreeKey(nextSize, address + oldBlock));
        _blocks.Remove(new BTreeKey(address + oldBlock, 0));
        if (nextSize > extra)
        {
            _blocks.Insert(new BTreeKey(address + newBlock, (nextSize - extra) | FreeFlag));
            _bySize.Insert(new BTreeKey(nextSize - extra, address + newBlock));
        }

        _counters.Resized((long)extra);
        return true;
    }

    /// <summary>Shrinks in place unless the new size rounds to the same block: the tail is freed and merged with a free block after it.</summary>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint oldBlock = LiveBlockSize(pointer, currentSize, out BTreeCursor entry);
        nuint newBlock = Allocator.AlignUp(newSize, Granule);
        if (newBlock == oldBlock)
        {
            return true;
        }

        if (!ReserveNodes(1, 1))
        {
            return false;
        }

        nuint address = (nuint)pointer;
        _blocks.Replace(entry, new BTreeKey(address, newBlock));
        nuint tail = address + newBlock;
        AddFree(_blocks.LowerBound(new BTreeKey(tail, 0)), tail, oldBlock - newBlock, hasEntry: false);
        _counters.Resized(-(long)(oldBlock - newBlock));
        return true;
    }

    /// <summary>The request rounded up to <see cref="Granule"/>.</summary>
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment) => Allocator.AlignUp(size, Granule);

    /// <summary>Gives every region and node page back to the source. Blocks handed out become invalid.</summary>
    protected override void Dispose(bool disposing)
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _bySize.Forget();
        _blocks.Forget();
        foreach (MemoryRange region in _regions)
        {
            _source.Release((byte*)region.From, region.Length);
        }

        _regions.Clear();
        _regionBytes = 0;
        _pool.Release();
        base.Dispose(disposing);
    }

    // The best fit for `blockSize` bytes at `alignment`: a cursor at the free block's size-tree
    // entry, invalid when none fits.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private BTreeCursor FindFit(nuint blockSize, nuint alignment)
    {
        BTreeCursor cursor = _bySize.LowerBound(new BTreeKey(blockSize, 0));
        if (alignment <= Granule || !cursor.IsValid)
        {
            return cursor;
        }

        for (int probe = 0; probe < AlignedProbes; probe++)
        {
            BTreeKey free = cursor.Key;
            if (Allocator.AlignUp(free.Second, alignment) - free.Second <= free.First - blockSize)
            {
                return cursor;
            }

            if (!cursor.MoveNext())
            {
                return cursor;
            }
        }

        // Blocks start on a granule, so this many bytes hold the request at any alignment.
        return _bySize.LowerBound(new BTreeKey(blockSize + alignment - Granule, 0));
    }

    // Hands out the front of the free block `free` (size, address), aligned: the bytes before the
    // aligned start and after the block stay free (they had no free neighbour, nor do they now).
    // The caller reserved the pages of two inserts per tree.
    private byte* Take(BTreeKey free, nuint size, nuint blockSize, nuint alignment)
    {
        nuint start = free.Second;
        nuint aligned = Allocator.AlignUp(start, Math.Max(alignment, Granule));
        nuint front = aligned - start;
        nuint tail = free.First - front - blockSize;
        _bySize.Remove(free);
        BTreeCursor entry = _blocks.Find(new BTreeKey(start, 0));
        if (front != 0)
        {
            _blocks.Replace(entry, new BTreeKey(start, front | FreeFlag));
            _bySize.Insert(new BTreeKey(front, start));
            _blocks.Insert(new BTreeKey(aligned, blockSize));
        }
        else
        {
            _blocks.Replace(entry, new BTreeKey(start, blockSize));
        }

        if (tail != 0)
        {
            nuint tailStart = aligned + blockSize;
            _blocks.Insert(new BTreeKey(tailStart, tail | FreeFlag));
            _bySize.Insert(new BTreeKey(tail, tailStart));
        }

        _counters.Allocated(size, blockSize);
        return (byte*)aligned;
    }

    // No free block fits: take a region that holds the request at its alignment, then the best fit
    // (in it, or in a free block it merged with). Nothing changes when the limit or the source refuses.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateSlow(nuint size, nuint blockSize, nuint alignment)
    {
        if (_disposed || !ReserveNodes(3, 3) || !TryAddRegion(blockSize, alignment))
        {
            return null;
        }

        BTreeCursor fit = FindFit(blockSize, alignment);
        return fit.IsValid ? Take(fit.Key, size, blockSize, alignment) : null;
    }

    // Obtains a region of at least RegionSize bytes that holds `blockSize` bytes at `alignment` and
    // adds it as a free block; the caller reserved the pages.
    private bool TryAddRegion(nuint blockSize, nuint alignment)
    {
        nuint granularity = _source.Granularity;

        // A region starts on the source's granularity: a larger alignment may cost up to the
        // difference, and a granularity below the granule up to a granule more.
        nuint padding = (alignment > granularity ? alignment - granularity : 0) + (granularity < Granule ? Granule : 0);
        nuint size = Math.Max(_regionSize, Allocator.AlignUp(blockSize + padding, granularity));
        if (size > _maximumCapacity - _regionBytes)
        {
            return false;
        }

        byte* region;
        try
        {
            if (!_source.TryObtain(size, out region))
            {
                return false;
            }
        }
        catch (ArgumentOutOfRangeException)
        {
            // More than the source can ever provide: exhaustion, not bad input, for this allocator's caller.
            return false;
        }

        var range = new MemoryRange((nuint)region, (nuint)region + size);
        int index = ~RegionIndex(range.From);
        _regions.Insert(index < 0 ? 0 : index, range);
        _regionBytes += size;
        nuint start = Allocator.AlignUp(range.From, Granule);
        nuint end = Allocator.AlignDown(range.To, Granule);
        AddFree(_blocks.LowerBound(new BTreeKey(start, 0)), start, end - start, hasEntry: false);
        return true;
    }

    // Makes [start, start + size) one free block, merged with the free blocks that touch it. `at` is
    // a cursor of the address tree at the block's own entry (hasEntry) or at the first entry after it.
    // The caller reserved the pages of one insert per tree.
    private void AddFree(BTreeCursor at, nuint start, nuint size, bool hasEntry = true)
    {
        nuint end = start + size;
        BTreeCursor after = at;
        bool nextFree = (!hasEntry || after.MoveNext()) && after.IsValid && after.Key.First == end && (after.Key.Second & FreeFlag) != 0;
        BTreeCursor before = at;
        bool previousFree = before.MovePrevious() && (before.Key.Second & FreeFlag) != 0
            && before.Key.First + (before.Key.Second & ~FreeFlag) == start;

        nuint nextSize = nextFree ? after.Key.Second & ~FreeFlag : 0;
        nuint mergedStart = start;
        if (previousFree)
        {
            nuint previousSize = before.Key.Second & ~FreeFlag;
            mergedStart = before.Key.First;
            _bySize.Remove(new BTreeKey(previousSize, mergedStart));
            _blocks.Replace(before, new BTreeKey(mergedStart, (end + nextSize - mergedStart) | FreeFlag));
            if (hasEntry)
            {
                _blocks.Remove(new BTreeKey(start, 0));
            }
        }
        else if (hasEntry)
        {
            _blocks.Replace(at, new BTreeKey(start, (end + nextSize - start) | FreeFlag));
        }

        if (nextFree)
        {
            _bySize.Remove(new BTreeKey(nextSize, end));
            _blocks.Remove(new BTreeKey(end, 0));
        }

        if (!previousFree && !hasEntry)
        {
            _blocks.Insert(new BTreeKey(start, (end + nextSize - start) | FreeFlag));
        }

        _bySize.Insert(new BTreeKey(end + nextSize - mergedStart, mergedStart));
    }

    // The size of the live block at `pointer`, after checking that the caller's pointer and size
    // name it; `entry` is its cursor in the address tree. Throws, changing nothing, otherwise.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nuint LiveBlockSize(byte* pointer, nuint size, out BTreeCursor entry)
    {
        entry = _blocks.Find(new BTreeKey((nuint)pointer, 0));
        if (!entry.IsValid)
        {
            ThrowNotLiveSlow(pointer);
        }

        nuint recorded = entry.Key.Second;
        if ((recorded & FreeFlag) != 0)
        {
            Allocator.ThrowDoubleFree(Name, pointer);
        }

        if (size > recorded || Allocator.AlignUp(size, Granule) != recorded)
        {
            ThrowWrongSize(pointer, recorded, size);
        }

        return recorded;
    }

    // Makes sure the node pool holds the pages of so many inserts into each tree.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool ReserveNodes(int sizeInserts, int addressInserts)
    {
        int pages = _bySize.PagesForInserts(sizeInserts) + _blocks.PagesForInserts(addressInserts);
        return _pool.FreeCount >= pages || ReserveNodesSlow(pages);
    }

    // A disposed allocator obtains nothing more.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ReserveNodesSlow(int pages) => !_disposed && _pool.TryReserve(pages);

    // A free cannot report exhaustion: when the source refuses the node page it may need, it throws
    // before anything changed.
    private void ReserveNodesOrThrow(int sizeInserts, int addressInserts)
    {
        if (!ReserveNodes(sizeInserts, addressInserts))
        {
            ThrowNodesRefused();
        }
    }

    // The index of the region that holds `address`, or the complement of where such a region would go.
    private int RegionIndex(nuint address)
    {
        int low = 0;
        int high = _regions.Count - 1;
        while (low <= high)
        {
            int middle = (int)((uint)(low + high) >> 1);
            MemoryRange region = _regions[middle];
            if (address < region.From)
            {
                high = middle - 1;
            }
            else if (address >= region.To)
            {
                low = middle + 1;
            }
            else
            {
                return middle;
            }
        }

        return ~low;
    }

    // After Dispose there is no block, so every pointer lands here: the disposal is what to report.
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotLiveSlow(byte* pointer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Owns(pointer))
        {
            Allocator.ThrowNotLive(Name, pointer);
        }

        Allocator.ThrowNotOwned(Name, pointer);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowWrongSize(byte* pointer, nuint blockSize, nuint size) =>
        throw new ArgumentException(
            $"The block at 0x{(nuint)pointer:X} has {blockSize} bytes (sizes {blockSize - Granule + 1} to {blockSize} name it), but a size of {size} was passed; pass the size it was allocated or last resized with.",
            nameof(size));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNodesRefused() =>
        throw new MemorySourceExhaustedException($"The memory source refused the B-tree node page this {Name} needs to record a free block; nothing was changed.");
}
