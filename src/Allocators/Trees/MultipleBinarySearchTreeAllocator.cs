using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// A region allocator with one address-ordered red-black tree of free blocks per power-of-two
/// size class, keeping for allocated blocks only their size class, one byte per minimum block
/// outside the region (the seed's <c>MultipleBinarySearchTreeAllocator</c>, the "long-lived"
/// context allocator).
/// </summary>
/// <remarks>
/// <para>
/// <b>What it is for.</b> Long-lived, mixed-size allocations inside one region, such as a
/// thread's or a context's private heap. Every request is served by one block of
/// <c>next_pow2(max(size, MinimumBlockSize))</c> bytes; a freed block is merged with its free
/// buddy (the adjacent block of the same size, in the same tree), cascading upwards, so that
/// freeing everything (and <see cref="Flush"/>) restores the initial carving.
/// </para>
/// <para>
/// <b>Deferred coalescing.</b> Each size class keeps a small LIFO cache of blocks freed without
/// merging (at most <see cref="MaximumCachedBlocksPerClass"/>, at most 256 KiB and 1/32 of the
/// capacity, but always one block), and an allocation takes its class's most recently cached
/// block first: an alloc+free ping-pong, or a steady state that frees and allocates the same
/// sizes, costs a pointer push and pop instead of splitting a large block down to the size and
/// merging it back up. A free to a full cache merges as usual. The cached blocks are merged into
/// the trees when a request cannot be met otherwise (and that request is then tried again, so a
/// request fails only when it would fail without caches), on <see cref="Flush"/>, and dropped
/// on <see cref="Reset"/>.
/// </para>
/// <code>
/// using var heap = new MultipleBinarySearchTreeAllocator(NativeMemorySource.Shared, 4 &lt;&lt; 20);
/// byte* p = heap.Allocate(100, 16);               // a 128-byte block
/// p = heap.GrowingReallocate(p, 100, 200, 16);    // in place when its 128-byte buddy is free
/// heap.Deallocate(p, 200, 16);
/// </code>
/// <para>
/// <b>Layout.</b> A free block holds its tree node (left, right, parent and colour: 24 bytes),
/// or, when cached, the link to the next cached block, in its first bytes, then a stamp word that
/// marks it free, hence the 32-byte minimum block. Every block is aligned to its own size.
/// Construction carves the region greedily into the largest size-aligned blocks: for a region
/// aligned to <see cref="MaximumBlockSize"/> that is as many top-class blocks as fit (kept
/// separate, never merged), then at most one block of each smaller class; a less aligned region
/// also gets smaller blocks at its start. Allocation takes the lowest suitably aligned block of
/// the exact class (its lowest block is cached, so the common case is O(1) plus the unlink), else
/// splits the lowest usable block of the next non-empty larger class, giving the tail back as
/// power-of-two pieces.
/// </para>
/// <para>
/// <b>Over-size requests</b> (larger than <see cref="MaximumBlockSize"/>) take k physically
/// contiguous top-class blocks, found by an address-ordered scan of the top tree, and are given
/// back as k separate top-class blocks. They fail when no such run exists.
/// </para>
/// <para>
/// <b>Never.</b> It never obtains more memory than its one region, never moves a block except
/// in a growing reallocation that cannot be done in place, and never touches an allocated block's
/// bytes. Not thread-safe.
/// </para>
/// <para>
/// <b>Checks.</b> A pointer outside the region, not aligned to its block size (so to the minimum
/// block size at least) or to the alignment passed, or whose block would run past the region's
/// end throws <see cref="ArgumentException"/>. So does a free, reallocation or resize in place of a
/// pointer that is not the start of a live block (one inside a block), or with a size of another
/// size class than the allocation's, and it changes nothing: a side map (one byte per minimum
/// block, 1/32 of the region by default, outside it) records each live block's class at its start,
/// written on allocation and checked and cleared on free. A size of the same class (rounding up to
/// the same block; for over-size blocks, to the same number of top blocks) is the same block and
/// is accepted. A free of a block that is already free (cached, in its tree, or merged into a
/// larger free block) throws as a double free; one whose memory was allocated again since is
/// refused when the new block differs, and frees the new block when it is the same.
/// </para>
/// <para>
/// <b>Statistics.</b> <see cref="AllocatorStatistics.BytesInUse"/> counts whole blocks (the usable
/// sizes), so cached blocks count as free; <see cref="AllocatorStatistics.Capacity"/> is the
/// carved part of the region. <see cref="FreeBlockCount"/> and <see cref="CachedBlockCount"/>
/// show the free blocks per size class; <see cref="Validate"/> checks every invariant.
/// </para>
/// </remarks>
public sealed unsafe partial class MultipleBinarySearchTreeAllocator : AllocatorBase, IRegionAllocator
{
    /// <summary>The smallest block size allowed: a block must hold its tree node.</summary>
    public const nuint SmallestMinimumBlockSize = 32;

    /// <summary>The largest top-class block size allowed (1 GiB).</summary>
    public const nuint LargestMaximumBlockSize = 1u << 30;

    /// <summary>The default minimum block size (32 bytes), as in the seed.</summary>
    public const nuint DefaultMinimumBlockSize = 32;

    /// <summary>The default top-class block size (1 MiB), as in the seed.</summary>
    public const nuint DefaultMaximumBlockSize = 1u << 20;

    /// <summary>The most free blocks one size class keeps in its cache.</summary>
    public const int MaximumCachedBlocksPerClass = 16;

    // The memory source the region came from, or null when the caller owns the region.
    private readonly IMemorySource? _source;

    // What was obtained from _source (released on Dispose); 0 when _source is null.
    private readonly byte* _obtained;
    private readonly nuint _obtainedSize;

    // The region: [_start, _start + _length). _start is aligned to _minimumBlockSize; _length is
    // set to zero on Dispose so that every later pointer is foreign.
    private readonly nuint _start;
    private nuint _length;

    private readonly nuint _minimumBlockSize;
    private readonly nuint _maximumBlockSize;
    private readonly int _topClass;
    private readonly long _capacity;

    // The free blocks not cached (each stamped: FreeBlockStamp). Every byte of the carved region is in exactly one free block
    // (in a tree or a cache) or one allocated block.
    private SizeClassTrees _trees;

    // Cache k holds free blocks of class k freed without coalescing (deferred coalescing): every
    // cached block is aligned to its size, stamped, in no tree and in no other cache.
    private SizeClassCaches _caches;

    // The class of every live block at its start (and nothing elsewhere): what a free is checked against.
    private LiveBlockClassMap _live;

    // BytesInUse is the sum of the usable sizes of the live allocations.
    private AllocatorCounters _counters;
    private bool _disposed;

    /// <summary>Creates an allocator over a region of <paramref name="size"/> bytes obtained from <paramref name="source"/>, with the seed's size classes (32 B … 1 MiB).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is smaller than one minimum block or too large.</exception>
    public MultipleBinarySearchTreeAllocator(IMemorySource source, nuint size)
        : this(source, size, DefaultMinimumBlockSize, DefaultMaximumBlockSize)
    {
    }

    /// <summary>Creates an allocator over a region of <paramref name="size"/> bytes obtained from <paramref name="source"/>, with the size classes <paramref name="minimumBlockSize"/> … <paramref name="maximumBlockSize"/>.</summary>
    /// <param name="source">Where the region comes from; it is released on <see cref="AllocatorBase.Dispose()"/>.</param>
    /// <param name="size">The region's size in bytes.</param>
    /// <param name="minimumBlockSize">The smallest block, a power of two of at least <see cref="SmallestMinimumBlockSize"/>.</param>
    /// <param name="maximumBlockSize">The top-class block, a power of two between <paramref name="minimumBlockSize"/> and <see cref="LargestMaximumBlockSize"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size or block size is out of range or not a power of two.</exception>
    public MultipleBinarySearchTreeAllocator(IMemorySource source, nuint size, nuint minimumBlockSize, nuint maximumBlockSize)
        : this(source, ObtainRegion(source, size, minimumBlockSize, maximumBlockSize), size, minimumBlockSize, maximumBlockSize)
    {
    }

    /// <summary>Creates an allocator over a caller-owned region with the seed's size classes (32 B … 1 MiB).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="region"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="region"/> is not aligned to 32 bytes.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is smaller than one minimum block or too large.</exception>
    public MultipleBinarySearchTreeAllocator(byte* region, nuint size)
        : this(region, size, DefaultMinimumBlockSize, DefaultMaximumBlockSize)
    {
    }

    /// <summary>
    /// Creates an allocator over the caller-owned region <c>[region, region + size)</c>, which it
    /// never frees: the caller keeps it alive for the allocator's lifetime and releases it afterwards.
    /// </summary>
    /// <param name="region">The region's start, aligned to <paramref name="minimumBlockSize"/>.</param>
    /// <param name="size">The region's size in bytes.</param>
    /// <param name="minimumBlockSize">The smallest block, a power of two of at least <see cref="SmallestMinimumBlockSize"/>.</param>
    /// <param name="maximumBlockSize">The top-class block, a power of two between <paramref name="minimumBlockSize"/> and <see cref="LargestMaximumBlockSize"/>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="region"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="region"/> is not aligned to <paramref name="minimumBlockSize"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size or block size is out of range or not a power of two, or the region wraps around the address space.</exception>
    public MultipleBinarySearchTreeAllocator(byte* region, nuint size, nuint minimumBlockSize, nuint maximumBlockSize)
        : this(null, CheckCallerRegion(region, size, minimumBlockSize, maximumBlockSize), size, minimumBlockSize, maximumBlockSize)
    {
    }

    // Both public constructors end here, with the region checked (and obtained, from a source).
    private MultipleBinarySearchTreeAllocator(IMemorySource? source, (nuint Start, nuint Obtained, nuint ObtainedSize) region, nuint size, nuint minimumBlockSize, nuint maximumBlockSize)
    {
        _source = source;
        _obtained = (byte*)region.Obtained;
        _obtainedSize = region.ObtainedSize;
        _start = region.Start;
        _length = size;
        _minimumBlockSize = minimumBlockSize;
        _maximumBlockSize = maximumBlockSize;
        _trees = new SizeClassTrees(minimumBlockSize, maximumBlockSize);
        _topClass = _trees.TopClass;
        _capacity = (long)_trees.Carve(_start, _start + _length);
        _caches = new SizeClassCaches(in _trees, (nuint)_capacity);
        _live = new LiveBlockClassMap(_start, _length, minimumBlockSize, maximumBlockSize);
    }

    /// <summary>The smallest block (and the alignment every block has).</summary>
    public nuint MinimumBlockSize => _minimumBlockSize;

    /// <summary>The top-class block size: larger requests are served by runs of contiguous top-class blocks.</summary>
    public nuint MaximumBlockSize => _maximumBlockSize;

    /// <summary>The number of size classes (trees): log2(<see cref="MaximumBlockSize"/> / <see cref="MinimumBlockSize"/>) + 1.</summary>
    public int SizeClassCount => _topClass + 1;

    /// <summary>The region blocks are carved from: <c>[start, start + size)</c> as requested at construction.</summary>
    public MemoryRange Range => new(_start, _start + _length);

    /// <inheritdoc />
    public override AllocatorStatistics Statistics => _counters.ToStatistics(_capacity, FailureCount);

    /// <summary>Whether <paramref name="pointer"/> lies in the region (not whether it is a live block).</summary>
    public override bool Owns(byte* pointer) => (nuint)pointer - _start < _length;

    /// <summary>The block size an allocation of <paramref name="size"/> (&gt; 0) bytes occupies.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nuint BlockSizeOf(nuint size)
    {
        if (size <= _minimumBlockSize)
        {
            return _minimumBlockSize;
        }

        return size <= _maximumBlockSize ? BitOperations.RoundUpToPowerOf2(size) : Allocator.AlignUp(size, _maximumBlockSize);
    }

    /// <summary>The block size of an allocation of <paramref name="size"/> bytes at <paramref name="pointer"/>, once <see cref="CheckBlock"/> accepts the pointer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nuint CheckedBlockSizeOf(byte* pointer, nuint size, nuint alignment)
    {
        nuint blockSize = BlockSizeOf(size);
        CheckBlock(pointer, blockSize, alignment);
        return blockSize;
    }

    // A resize in place checks the block as a free does, then compares the block sizes.
    private (nuint Old, nuint New) ResizedBlockSizes(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint oldBlock = CheckedBlockSizeOf(pointer, currentSize, alignment);
        if (!_live.Contains((nuint)pointer, oldBlock))
        {
            ThrowNotLiveSlow(pointer, oldBlock);
        }

        return (oldBlock, BlockSizeOf(newSize));
    }

    /// <inheritdoc />
    /// <remarks>
    /// The fast path: the class's most recently cached block, else the lowest block of the class's
    /// tree, when it is aligned as asked; anything else goes to <see cref="AllocateSlow"/>.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        nuint blockSize = BlockSizeOf(size);
        if (blockSize > _maximumBlockSize)
        {
            return AllocateOverSizeSlow(size, blockSize, alignment);
        }

        int sizeClass = _trees.ClassOf(blockSize);
        nuint* block = _caches.Cache(sizeClass).TryTake(alignment);
        if (block == null)
        {
            ref RedBlackTree tree = ref _trees.Tree(sizeClass);
            block = (nuint*)tree.First;
            if (block == null || !Allocator.IsAligned((nuint)block, alignment))
            {
                return AllocateSlow(size, blockSize, sizeClass, alignment);
            }

            tree.Remove((FreeNode*)block);
        }

        FreeBlockStamp.Erase((nuint)block);
        _live.Add((nuint)block, sizeClass);
        _counters.Allocated(size, blockSize);
        return (byte*)block;
    }

    /// <inheritdoc />
    /// <remarks>The fast path: a block below the top class goes to its class's cache while the cache has room.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        nuint blockSize = CheckedBlockSizeOf(pointer, size, alignment);
        if (blockSize <= _maximumBlockSize)
        {
            int sizeClass = _trees.ClassOf(blockSize);
            var block = (nuint*)pointer;
            if (!_live.TryRemove((nuint)block, sizeClass))
            {
                ThrowNotLiveSlow(pointer, blockSize);
            }

            // Deferred coalescing: the block waits in its class's cache for the next allocation
            // of its size instead of merging now and splitting again then.
            if (_caches.Cache(sizeClass).TryAdd(block))
            {
                FreeBlockStamp.Mark((nuint)block);
            }
            else
            {
                _trees.Free((nuint)block, sizeClass);
            }
        }
        else
        {
            if (!_live.Contains((nuint)pointer, blockSize))
            {
                ThrowNotLiveSlow(pointer, blockSize);
            }

            FreeTopBlocks(pointer, blockSize);
            _live.Remove((nuint)pointer, blockSize);
        }

        _counters.Freed(blockSize);
    }

    /// <summary>
    /// Grows in place when the new size fits the current block, or when the blocks that would double
    /// it (repeatedly) are free, in their trees or caches: the adjacent block of the same size, then
    /// of twice the size, and so on, then top-class blocks. (A neighbour that is free but split into
    /// smaller cached blocks does not count: the grow then moves.)
    /// </summary>
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        (nuint oldBlock, nuint newBlock) = ResizedBlockSizes(pointer, currentSize, newSize, alignment);
        if (newBlock == oldBlock)
        {
            return true;
        }

        nuint address = (nuint)pointer;

        // Only the lower buddy can double in place (the merged block must stay size-aligned);
        // over-size blocks only need to start a top-class block.
        if (newBlock > _start + _length - address || !Allocator.IsAligned(address, Math.Min(newBlock, _maximumBlockSize)))
        {
            return false;
        }

        // Two passes over the same pieces (each the size of what it doubles, at most a top block):
        // first make sure every piece is free, in its tree or its class's cache, then take them,
        // so that a failure changes nothing.
        for (nuint offset = oldBlock; offset < newBlock; offset += Math.Min(offset, _maximumBlockSize))
        {
            int pieceClass = _trees.ClassOf(Math.Min(offset, _maximumBlockSize));
            if (_trees.Tree(pieceClass).Find(address + offset) == null && !_caches.Cache(pieceClass).Contains(address + offset))
            {
                return false;
            }
        }

        for (nuint offset = oldBlock; offset < newBlock; offset += Math.Min(offset, _maximumBlockSize))
        {
            int pieceClass = _trees.ClassOf(Math.Min(offset, _maximumBlockSize));
            ref RedBlackTree tree = ref _trees.Tree(pieceClass);
            FreeNode* node = tree.Find(address + offset);
            if (node != null)
            {
                tree.Remove(node);
            }
            else
            {
                _caches.Cache(pieceClass).Remove(address + offset);
            }
        }

        _live.Remove(address, oldBlock);
        _live.Add(address, newBlock);
        _counters.Resized((long)(newBlock - oldBlock));
        return true;
    }

    /// <summary>Always shrinks in place: the tail beyond the new block size is freed.</summary>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        (nuint oldBlock, nuint newBlock) = ResizedBlockSizes(pointer, currentSize, newSize, alignment);
        if (newBlock == oldBlock)
        {
            return true;
        }

        nuint address = (nuint)pointer;
        if (newBlock < _maximumBlockSize)
        {
            _trees.FreeRange(address + newBlock, address + Math.Min(oldBlock, _maximumBlockSize));
        }

        for (nuint offset = Math.Max(newBlock, _maximumBlockSize); offset < oldBlock; offset += _maximumBlockSize)
        {
            _trees.Free(address + offset, _topClass);
        }

        _live.Remove(address, oldBlock);
        _live.Add(address, newBlock);
        _counters.Resized((long)newBlock - (long)oldBlock);
        return true;
    }

    /// <summary>
    /// Frees every block at once: the trees and the caches are emptied and the region is carved
    /// again as at construction. Blocks handed out before become invalid. Costs one insert per
    /// carved block.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _trees.Clear();
        _caches.Clear();
        _live.Clear();
        _trees.Carve(_start, _start + _length);
        _counters.BytesInUse = 0;
    }

    /// <summary>The block size: <c>next_pow2(max(size, MinimumBlockSize))</c>, or a multiple of <see cref="MaximumBlockSize"/> for over-size requests.</summary>
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment) => BlockSizeOf(size);

    /// <summary>Releases the region to its memory source (a caller-owned region is left alone). Blocks handed out become invalid.</summary>
    protected override void Dispose(bool disposing)
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _trees.Clear();
        _caches.Clear();
        _length = 0;
        _live.Release();
        _source?.Release(_obtained, _obtainedSize);
        base.Dispose(disposing);
    }

    /// <summary>
    /// Gives every cached free block back to the trees, merging it with its free buddies as a
    /// free without the cache would have: afterwards the free memory is as coalesced as it can be
    /// (after freeing everything, it is the initial carving again). The allocator does this by
    /// itself when a request cannot be met otherwise; call it to defragment ahead of a phase of
    /// large requests. Costs one tree insert per cached block (at most
    /// <see cref="MaximumCachedBlocksPerClass"/> per size class).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public void Flush()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _caches.FlushInto(ref _trees);
    }

    private static void ValidateSizes(nuint size, nuint minimumBlockSize, nuint maximumBlockSize)
    {
        if (!BitOperations.IsPow2(minimumBlockSize) || minimumBlockSize < SmallestMinimumBlockSize || minimumBlockSize > LargestMaximumBlockSize)
        {
            throw new ArgumentOutOfRangeException(nameof(minimumBlockSize), minimumBlockSize, $"The minimum block size must be a power of two between {SmallestMinimumBlockSize} (the size of a free block's tree node) and {LargestMaximumBlockSize}.");
        }

        if (!BitOperations.IsPow2(maximumBlockSize) || maximumBlockSize < minimumBlockSize || maximumBlockSize > LargestMaximumBlockSize)
        {
            throw new ArgumentOutOfRangeException(nameof(maximumBlockSize), maximumBlockSize, $"The maximum block size must be a power of two between the minimum block size ({minimumBlockSize}) and {LargestMaximumBlockSize}.");
        }

        if (size < minimumBlockSize || size > Allocator.MaximumSize)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"The region must hold at least one minimum block ({minimumBlockSize} bytes) and at most {Allocator.MaximumSize} bytes.");
        }
    }

    private static (nuint Start, nuint Obtained, nuint ObtainedSize) ObtainRegion(IMemorySource source, nuint size, nuint minimumBlockSize, nuint maximumBlockSize)
    {
        ArgumentNullException.ThrowIfNull(source);
        ValidateSizes(size, minimumBlockSize, maximumBlockSize);

        // A source with a coarser granularity than the minimum block always returns aligned
        // regions; otherwise obtain slack for aligning the start.
        nuint slack = source.Granularity >= minimumBlockSize ? 0 : minimumBlockSize;
        byte* obtained = source.Obtain(size + slack);
        return (Allocator.AlignUp((nuint)obtained, minimumBlockSize), (nuint)obtained, size + slack);
    }

    private static (nuint Start, nuint Obtained, nuint ObtainedSize) CheckCallerRegion(byte* region, nuint size, nuint minimumBlockSize, nuint maximumBlockSize)
    {
        if (region == null)
        {
            throw new ArgumentNullException(nameof(region));
        }

        ValidateSizes(size, minimumBlockSize, maximumBlockSize);
        if (!Allocator.IsAligned((nuint)region, minimumBlockSize))
        {
            throw new ArgumentException($"The region 0x{(nuint)region:X} must be aligned to the minimum block size ({minimumBlockSize} bytes).", nameof(region));
        }

        if (size > nuint.MaxValue - (nuint)region)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "The region runs past the end of the address space.");
        }

        return ((nuint)region, 0, 0);
    }

    // Every block is aligned to its own size (over-size blocks to the top class), so a pointer that
    // is not cannot be a block of that size: this also catches many frees with a wrong size.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckBlock(byte* pointer, nuint blockSize, nuint alignment)
    {
        nuint offset = (nuint)pointer - _start;
        nuint mask = (Math.Min(blockSize, _maximumBlockSize) - 1) | (alignment - 1);
        if (offset >= _length || blockSize > _length - offset || ((nuint)pointer & mask) != 0)
        {
            ThrowNotOwnedSlow(pointer);
        }
    }

    // After Dispose the region is empty, so every pointer lands here: the disposal is what to report.
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotOwnedSlow(byte* pointer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Allocator.ThrowNotOwned(Name, pointer);
    }

    // Neither the cache nor the tree's first block served the request: search the trees, and
    // when that fails with blocks still cached, coalesce them and search once more, so that a
    // request fails only when it would fail with eager coalescing.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateSlow(nuint size, nuint blockSize, int sizeClass, nuint alignment)
    {
        nuint block = _trees.Take(sizeClass, alignment);
        if (block == 0 && _caches.HasBlocks())
        {
            _caches.FlushInto(ref _trees);
            block = _trees.Take(sizeClass, alignment);
        }

        return Handout(block, size, blockSize);
    }

    // Over-size request: `blockSize / top` contiguous top-class blocks, coalescing the caches
    // before giving up as AllocateSlow does.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateOverSizeSlow(nuint size, nuint blockSize, nuint alignment)
    {
        if (blockSize > _length)
        {
            return null;
        }

        nuint count = blockSize / _maximumBlockSize;
        nuint block = _trees.TakeTopRun(count, alignment);
        if (block == 0 && _caches.HasBlocks())
        {
            _caches.FlushInto(ref _trees);
            block = _trees.TakeTopRun(count, alignment);
        }

        return Handout(block, size, blockSize);
    }

    // A block the trees gave up (or 0 when they had none) becomes an allocation.
    private byte* Handout(nuint block, nuint size, nuint blockSize)
    {
        if (block == 0)
        {
            return null;
        }

        FreeBlockStamp.Erase(block);
        _live.Add(block, blockSize);
        _counters.Allocated(size, blockSize);
        return (byte*)block;
    }

    // Frees an over-size block as individual top-class blocks, after checking none is already free.
    private void FreeTopBlocks(byte* pointer, nuint blockSize)
    {
        nuint address = (nuint)pointer;
        for (nuint offset = 0; offset < blockSize; offset += _maximumBlockSize)
        {
            if (_trees.OverlapsFreeTopBlock(address + offset) || _caches.Cache(_topClass).Contains(address + offset))
            {
                Allocator.ThrowDoubleFree(Name, pointer);
            }
        }

        for (nuint offset = 0; offset < blockSize; offset += _maximumBlockSize)
        {
            _trees.Free(address + offset, _topClass);
        }
    }
}
