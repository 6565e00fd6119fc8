using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// A region allocator with one address-ordered red-black tree of free blocks per power-of-two
/// size class, keeping no bookkeeping at all for allocated blocks (the seed's
/// <c>MultipleBinarySearchTreeAllocator</c>, the "long-lived" context allocator).
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
/// end throws <see cref="ArgumentException"/>. Freeing a block that is still free (cached, in
/// its tree, or merged into a larger free block) throws as a double free and changes nothing:
/// every free block carries a stamp word, and a free of a block that carries it is checked
/// exactly against the caches and the trees (the stamp only keeps that check off the common
/// path, so caller data that happens to equal it costs time, never a wrong answer). Not detected,
/// and corrupting the allocator: freeing with a size of another size class than the
/// allocation's when the pointer is aligned to both, and a double free after any part of the
/// block's memory was allocated again (including by a neighbour growing in place).
/// </para>
/// <para>
/// <b>Statistics.</b> <see cref="AllocatorStatistics.BytesInUse"/> counts whole blocks (the usable
/// sizes), so cached blocks count as free; <see cref="AllocatorStatistics.Capacity"/> is the
/// carved part of the region.
/// </para>
/// </remarks>
public sealed unsafe class MultipleBinarySearchTreeAllocator : AllocatorBase, IRegionAllocator
{
    /// <summary>The smallest block size allowed: a block must hold its tree node.</summary>
    public const nuint SmallestMinimumBlockSize = 32;

    /// <summary>The largest top-class block size allowed (1 GiB).</summary>
    public const nuint LargestMaximumBlockSize = 1u << 30;

    /// <summary>The default minimum block size (32 bytes), as in the seed.</summary>
    public const nuint DefaultMinimumBlockSize = 32;

    /// <summary>The default top-class block size (1 MiB), as in the seed.</summary>
    public const nuint DefaultMaximumBlockSize = 1u << 20;

    private const int MaximumClassCount = 26; // 2^5 … 2^30

    /// <summary>The most free blocks one size class keeps in its cache.</summary>
    public const int MaximumCachedBlocksPerClass = 16;

    // A class caches at most this many bytes (and at most 1/32 of the capacity), but always one
    // block, so that a ping-pong of even the largest block never splits and merges.
    private const nuint CacheBytesPerClass = 256 * 1024;

    // Every free block (in a tree or a cache) carries `address ^ FreeStamp` in the word after the
    // tree node (word 3: offset 24 on 64-bit platforms, inside the 32-byte minimum block); a block
    // being allocated has it cleared. A free whose block carries its stamp is checked exactly
    // (CheckNotFree); the stamp only keeps that check off the hot path.
    private const int StampWord = 3;
    private static readonly nuint FreeStamp = unchecked((nuint)0x9E37_79B9_7F4A_7C15UL);

    // The memory source the region came from, or null when the caller owns the region.
    private readonly IMemorySource? _source;

    // What was obtained from _source (released on Dispose); unused when _source is null.
    private readonly byte* _obtained;
    private readonly nuint _obtainedSize;

    // The region: [_start, _start + _length). _start is aligned to _minimumBlockSize; _length is
    // set to zero on Dispose so that every later pointer is foreign.
    private readonly nuint _start;
    private nuint _length;

    private readonly nuint _minimumBlockSize;
    private readonly nuint _maximumBlockSize;
    private readonly int _minimumShift;
    private readonly int _topClass;
    private readonly long _capacity;

    // Tree k holds the free blocks of _minimumBlockSize << k bytes. Below the top class no tree
    // holds two physically adjacent blocks (they would have been merged); the top tree may.
    // Every byte of the carved region is in exactly one free block or one allocated block.
    private TreeArray _trees;

    // Cache k is a LIFO list of free blocks of class k, threaded through their first word, that
    // were freed without coalescing (deferred coalescing): Count <= Limit, every block is aligned
    // to its size, stamped, in no tree and in no other cache. Every free byte is in exactly one
    // tree block or one cached block.
    private CacheArray _caches;

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
    {
        ArgumentNullException.ThrowIfNull(source);
        ValidateSizes(size, minimumBlockSize, maximumBlockSize);

        // A source with a coarser granularity than the minimum block always returns aligned
        // regions; otherwise obtain slack for aligning the start.
        nuint slack = source.Granularity >= minimumBlockSize ? 0 : minimumBlockSize;
        _obtainedSize = size + slack;
        _obtained = source.Obtain(_obtainedSize);
        _source = source;
        _start = Allocator.AlignUp((nuint)_obtained, minimumBlockSize);
        _length = size;
        _minimumBlockSize = minimumBlockSize;
        _maximumBlockSize = maximumBlockSize;
        _minimumShift = BitOperations.Log2(minimumBlockSize);
        _topClass = BitOperations.Log2(maximumBlockSize) - _minimumShift;
        _capacity = (long)Carve();
        SetCacheLimits();
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

        _start = (nuint)region;
        _length = size;
        _minimumBlockSize = minimumBlockSize;
        _maximumBlockSize = maximumBlockSize;
        _minimumShift = BitOperations.Log2(minimumBlockSize);
        _topClass = BitOperations.Log2(maximumBlockSize) - _minimumShift;
        _capacity = (long)Carve();
        SetCacheLimits();
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

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        nuint blockSize = BlockSizeOf(size);
        if (blockSize > _maximumBlockSize)
        {
            return AllocateOverSize(size, blockSize, alignment);
        }

        int sizeClass = ClassOf(blockSize);
        ref BlockCache cache = ref Cache(sizeClass);
        nuint* block = cache.Head;
        if (block != null && Allocator.IsAligned((nuint)block, alignment))
        {
            cache.Head = (nuint*)block[0];
            cache.Count--;
        }
        else
        {
            ref RedBlackTree tree = ref Tree(sizeClass);
            block = (nuint*)tree.First;
            if (block == null || !Allocator.IsAligned((nuint)block, alignment))
            {
                return AllocateSlow(size, blockSize, sizeClass, alignment);
            }

            tree.Remove((FreeNode*)block);
        }

        block[StampWord] = 0;
        _counters.Allocated(size, blockSize);
        return (byte*)block;
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        nuint blockSize = BlockSizeOf(size);
        CheckBlock(pointer, blockSize, alignment);
        if (blockSize <= _maximumBlockSize)
        {
            int sizeClass = ClassOf(blockSize);
            var block = (nuint*)pointer;
            if (block[StampWord] == ((nuint)block ^ FreeStamp))
            {
                CheckNotFree((nuint)block, sizeClass);
            }

            ref BlockCache cache = ref Cache(sizeClass);
            if (cache.Count < cache.Limit)
            {
                // Deferred coalescing: the block waits in its class's cache for the next
                // allocation of its size instead of merging now and splitting again then.
                block[0] = (nuint)cache.Head;
                block[StampWord] = (nuint)block ^ FreeStamp;
                cache.Head = block;
                cache.Count++;
            }
            else
            {
                FreeBlock((nuint)block, sizeClass);
            }
        }
        else
        {
            FreeTopBlocks(pointer, blockSize);
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
        nuint oldBlock = BlockSizeOf(currentSize);
        CheckBlock(pointer, oldBlock, alignment);
        nuint newBlock = BlockSizeOf(newSize);
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

        // First make sure every piece is free, then take them: a failure changes nothing.
        // A piece may be free in its tree or in its class's cache.
        for (nuint offset = oldBlock; offset < newBlock; offset += Math.Min(offset, _maximumBlockSize))
        {
            int pieceClass = ClassOf(Math.Min(offset, _maximumBlockSize));
            if (Tree(pieceClass).Find(address + offset) == null && !CacheContains(pieceClass, address + offset))
            {
                return false;
            }
        }

        for (nuint offset = oldBlock; offset < newBlock; offset += Math.Min(offset, _maximumBlockSize))
        {
            int pieceClass = ClassOf(Math.Min(offset, _maximumBlockSize));
            ref RedBlackTree tree = ref Tree(pieceClass);
            FreeNode* node = tree.Find(address + offset);
            if (node != null)
            {
                tree.Remove(node);
            }
            else
            {
                CacheRemove(pieceClass, address + offset);
            }
        }

        _counters.Resized((long)(newBlock - oldBlock));
        return true;
    }

    /// <summary>Always shrinks in place: the tail beyond the new block size is freed.</summary>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint oldBlock = BlockSizeOf(currentSize);
        CheckBlock(pointer, oldBlock, alignment);
        nuint newBlock = BlockSizeOf(newSize);
        if (newBlock == oldBlock)
        {
            return true;
        }

        nuint address = (nuint)pointer;
        if (newBlock < _maximumBlockSize)
        {
            FreeRange(address + newBlock, address + Math.Min(oldBlock, _maximumBlockSize));
        }

        for (nuint offset = Math.Max(newBlock, _maximumBlockSize); offset < oldBlock; offset += _maximumBlockSize)
        {
            FreeBlock(address + offset, _topClass);
        }

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
        _trees = default;
        EmptyCaches();
        Carve();
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
        _trees = default;
        EmptyCaches();
        _length = 0;
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
        FlushCaches();
    }

    /// <summary>The number of free blocks of size class <paramref name="sizeClass"/> in its tree, cached blocks not included (0 = the minimum block).</summary>
    internal int FreeBlockCount(int sizeClass)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeClass);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sizeClass, _topClass);
        return Tree(sizeClass).Count();
    }

    /// <summary>The number of cached free blocks of size class <paramref name="sizeClass"/>.</summary>
    internal int CachedBlockCount(int sizeClass)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeClass);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sizeClass, _topClass);
        return Cache(sizeClass).Count;
    }

    /// <summary>The most blocks the cache of size class <paramref name="sizeClass"/> keeps.</summary>
    internal int CacheLimit(int sizeClass)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeClass);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sizeClass, _topClass);
        return Cache(sizeClass).Limit;
    }

    /// <summary>The first cached block of size class <paramref name="sizeClass"/> (null when its cache is empty), for tests that corrupt it.</summary>
    internal byte* CachedBlock(int sizeClass) => (byte*)Cache(sizeClass).Head;

    /// <summary>The number of free blocks in the tree of each size class (cached blocks not included), index 0 being the minimum block.</summary>
    internal int[] FreeBlockCounts()
    {
        int[] counts = new int[_topClass + 1];
        for (int k = 0; k <= _topClass; k++)
        {
            counts[k] = Tree(k).Count();
        }

        return counts;
    }

    /// <summary>
    /// Checks every tree's red-black invariants and the allocator's own: free blocks (in trees and
    /// caches) lie in the region, are aligned to their size, carry their free stamp and do not
    /// overlap (so no block is both cached and in a tree, or cached twice); no tree block's buddy
    /// is in the same tree below the top class; every cache holds as many blocks as it counts,
    /// within its limit; and free plus in-use bytes equal the capacity.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant is violated.</exception>
    internal void Validate()
    {
        var blocks = new List<(nuint Address, nuint Size)>();
        nuint freeBytes = 0;
        for (int k = 0; k <= _topClass; k++)
        {
            ref RedBlackTree tree = ref Tree(k);
            nuint blockSize = _minimumBlockSize << k;
            string? error = tree.Validate();
            if (error != null)
            {
                throw new InvalidOperationException($"Tree of {blockSize}-byte blocks: {error}.");
            }

            for (FreeNode* node = tree.First; node != null; node = RedBlackTree.Successor(node))
            {
                nuint address = (nuint)node;
                if (address < _start || blockSize > _start + _length - address || !Allocator.IsAligned(address, blockSize))
                {
                    throw new InvalidOperationException($"Free {blockSize}-byte block 0x{address:X} is outside the region or not aligned to its size.");
                }

                if (k != _topClass && (address & blockSize) == 0 && tree.Find(address + blockSize) != null)
                {
                    throw new InvalidOperationException($"Free {blockSize}-byte block 0x{address:X} and its buddy are both free but not merged.");
                }

                if (((nuint*)address)[StampWord] != (address ^ FreeStamp))
                {
                    throw new InvalidOperationException($"Free {blockSize}-byte block 0x{address:X} in the tree has lost its free stamp.");
                }

                blocks.Add((address, blockSize));
                freeBytes += blockSize;
            }

            ref BlockCache cache = ref Cache(k);
            if (cache.Count < 0 || cache.Count > cache.Limit || cache.Limit > MaximumCachedBlocksPerClass)
            {
                throw new InvalidOperationException($"The cache of {blockSize}-byte blocks counts {cache.Count} blocks (limit {cache.Limit}).");
            }

            int walked = 0;
            for (nuint* block = cache.Head; block != null; block = (nuint*)block[0])
            {
                // Checked before following the link, so a corrupted link is reported, not followed.
                nuint address = (nuint)block;
                if (++walked > cache.Count)
                {
                    throw new InvalidOperationException($"The cache of {blockSize}-byte blocks holds more blocks than it counts ({cache.Count}).");
                }

                if (address < _start || blockSize > _start + _length - address || !Allocator.IsAligned(address, blockSize))
                {
                    throw new InvalidOperationException($"Cached {blockSize}-byte block 0x{address:X} is outside the region or not aligned to its size.");
                }

                if (block[StampWord] != (address ^ FreeStamp))
                {
                    throw new InvalidOperationException($"Cached {blockSize}-byte block 0x{address:X} has lost its free stamp.");
                }

                blocks.Add((address, blockSize));
                freeBytes += blockSize;
            }

            if (walked != cache.Count)
            {
                throw new InvalidOperationException($"The cache of {blockSize}-byte blocks holds {walked} blocks but counts {cache.Count}.");
            }
        }

        blocks.Sort((a, b) => a.Address.CompareTo(b.Address));
        for (int i = 1; i < blocks.Count; i++)
        {
            if (blocks[i - 1].Address + blocks[i - 1].Size > blocks[i].Address)
            {
                throw new InvalidOperationException($"Free blocks 0x{blocks[i - 1].Address:X} ({blocks[i - 1].Size} bytes) and 0x{blocks[i].Address:X} overlap (or one is both cached and in a tree).");
            }
        }

        if ((long)freeBytes + _counters.BytesInUse != _capacity)
        {
            throw new InvalidOperationException($"Free bytes ({freeBytes}) plus bytes in use ({_counters.BytesInUse}) differ from the capacity ({_capacity}).");
        }
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

    // Greedy carving (seed §7.3), restricted to size-aligned blocks: at each position the largest
    // block that is aligned to its size and fits. For a region aligned to the top block this is
    // exactly the seed's carving (top blocks while they fit, then at most one of each smaller class).
    private nuint Carve()
    {
        nuint cursor = _start;
        nuint end = _start + _length;
        nuint carved = 0;
        while (end - cursor >= _minimumBlockSize)
        {
            nuint blockSize = Math.Min(LowestSetBit(cursor), _maximumBlockSize);
            while (blockSize > end - cursor)
            {
                blockSize >>= 1;
            }

            Tree(ClassOf(blockSize)).Insert(cursor);
            ((nuint*)cursor)[StampWord] = cursor ^ FreeStamp;
            cursor += blockSize;
            carved += blockSize;
        }

        return carved;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref RedBlackTree Tree(int sizeClass) =>
        ref Unsafe.Add(ref Unsafe.As<TreeArray, RedBlackTree>(ref _trees), sizeClass);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int ClassOf(nuint blockSize) => BitOperations.Log2(blockSize) - _minimumShift;

    // Every block is aligned to its own size (over-size blocks to the top class), so a pointer that
    // is not cannot be a block of that size: this also catches many frees with a wrong size.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CheckBlock(byte* pointer, nuint blockSize, nuint alignment)
    {
        nuint offset = (nuint)pointer - _start;
        nuint mask = (Math.Min(blockSize, _maximumBlockSize) - 1) | (alignment - 1);
        if (offset >= _length || blockSize > _length - offset || ((nuint)pointer & mask) != 0)
        {
            Allocator.ThrowNotOwned(Name, pointer);
        }
    }

    // Neither the cache nor the tree's first block served the request: search the trees, and
    // when that fails with blocks still cached, coalesce them and search once more, so that a
    // request fails only when it would fail with eager coalescing.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateSlow(nuint size, nuint blockSize, int sizeClass, nuint alignment)
    {
        byte* block = AllocateFromTrees(size, blockSize, sizeClass, alignment);
        if (block == null && HasCachedBlocks())
        {
            FlushCaches();
            block = AllocateFromTrees(size, blockSize, sizeClass, alignment);
        }

        return block;
    }

    // Searches the exact class in address order, then splits the lowest usable block of a larger class.
    private byte* AllocateFromTrees(nuint size, nuint blockSize, int sizeClass, nuint alignment)
    {
        // Also reached after a flush, with the exact class not yet searched, so it starts at First
        // (which every alignment up to the block size accepts).
        ref RedBlackTree exact = ref Tree(sizeClass);
        for (FreeNode* node = exact.First; node != null; node = RedBlackTree.Successor(node))
        {
            if (Allocator.IsAligned((nuint)node, alignment))
            {
                exact.Remove(node);
                ((nuint*)node)[StampWord] = 0;
                _counters.Allocated(size, blockSize);
                return (byte*)node;
            }
        }

        // W-MB3: no stepping from an unaligned start (which never became aligned, and never ended
        // when the alignment exceeded the block). Every node is aligned to its own size, so the
        // only aligned position inside it that can fit the request is its start: when the start
        // is not aligned, the next aligned address is at least a whole node further on. Hence
        // there is never a front remainder, and the tail splits into size-aligned pieces.
        for (int k = sizeClass + 1; k <= _topClass; k++)
        {
            ref RedBlackTree tree = ref Tree(k);
            nuint largerSize = _minimumBlockSize << k;
            for (FreeNode* node = tree.First; node != null; node = RedBlackTree.Successor(node))
            {
                nuint start = (nuint)node;
                if (Allocator.IsAligned(start, alignment))
                {
                    tree.Remove(node);
                    ((nuint*)start)[StampWord] = 0;
                    FreeRange(start + blockSize, start + largerSize);
                    _counters.Allocated(size, blockSize);
                    return (byte*)start;
                }
            }
        }

        return null;
    }

    // Over-size request: as AllocateSlow, coalescing the caches before giving up.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateOverSize(nuint size, nuint blockSize, nuint alignment)
    {
        if (blockSize > _length)
        {
            return null;
        }

        byte* block = AllocateTopRun(size, blockSize, alignment);
        if (block == null && HasCachedBlocks())
        {
            FlushCaches();
            block = AllocateTopRun(size, blockSize, alignment);
        }

        return block;
    }

    // The lowest run of `blockSize / top` contiguous top-class blocks whose first is aligned.
    private byte* AllocateTopRun(nuint size, nuint blockSize, nuint alignment)
    {
        nuint count = blockSize / _maximumBlockSize;
        ref RedBlackTree top = ref Tree(_topClass);
        FreeNode* first = top.First;
        while (first != null)
        {
            if (!Allocator.IsAligned((nuint)first, alignment))
            {
                first = RedBlackTree.Successor(first);
                continue;
            }

            FreeNode* last = first;
            nuint run = 1;
            while (run < count)
            {
                FreeNode* next = RedBlackTree.Successor(last);
                if (next == null)
                {
                    return null;
                }

                if ((nuint)last + _maximumBlockSize != (nuint)next)
                {
                    break;
                }

                last = next;
                run++;
            }

            if (run == count)
            {
                FreeNode* node = first;
                for (nuint i = 0; i < count; i++)
                {
                    FreeNode* next = RedBlackTree.Successor(node);
                    top.Remove(node);
                    node = next;
                }

                ((nuint*)first)[StampWord] = 0;
                _counters.Allocated(size, blockSize);
                return (byte*)first;
            }

            // No run can start inside the one that just broke.
            first = RedBlackTree.Successor(last);
        }

        return null;
    }

    // Gives [from, to) (a multiple of the minimum block, less than a top block) back as power-of-two
    // pieces, smallest first (the seed's split_up).
    private void FreeRange(nuint from, nuint to)
    {
        nuint remaining = to - from;
        while (remaining != 0)
        {
            nuint piece = LowestSetBit(remaining);
            FreeBlock(from, ClassOf(piece));
            from += piece;
            remaining -= piece;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static nuint LowestSetBit(nuint value)
    {
        if (Bmi1.X64.IsSupported)
        {
            return (nuint)Bmi1.X64.ExtractLowestSetBit(value);
        }

        return value & (0 - value);
    }

    // Frees one block of class `sizeClass` at `address`, merging it with its buddy (the adjacent
    // block of the same size with which it forms a block aligned to twice the size) when that is
    // free, and freeing the merged block one class up, until the buddy is not free or the top class
    // is reached (top blocks are never merged: W-MB1, W-MB2, W-MB4). The buddy is the block's
    // in-order predecessor or successor, so the descent that finds the insertion point also finds it.
    //
    // Why buddies only, not any adjacent block of the same size as the seed intended: merging
    // non-buddies produces blocks that are not size-aligned, after which freeing everything can
    // leave the region fragmented for good (128 bytes as 32@0, 64@32, 32@96: no two blocks of one
    // size are adjacent). With buddies, freeing everything always restores the initial carving.
    private void FreeBlock(nuint address, int sizeClass)
    {
        while (true)
        {
            ref RedBlackTree tree = ref Tree(sizeClass);
            nuint blockSize = _minimumBlockSize << sizeClass;
            FreeNode* existing = tree.Locate(address, out FreeNode* predecessor, out FreeNode* successor, out FreeNode* parent, out bool asLeftChild);
            if (Overlaps(existing, predecessor, successor, address, blockSize))
            {
                // At the first class the allocator is still unchanged; above it, only a double free
                // that went undetected earlier can lead here.
                Allocator.ThrowDoubleFree(Name, (void*)address);
            }

            // Stamped even when it merges into a lower buddy, so that a later double free of it
            // (now inside a larger free block) is still caught.
            ((nuint*)address)[StampWord] = address ^ FreeStamp;
            if (sizeClass != _topClass)
            {
                nuint buddy = address ^ blockSize;
                FreeNode* neighbour = buddy > address ? successor : predecessor;
                if ((nuint)neighbour == buddy)
                {
                    tree.Remove(neighbour);
                    address &= ~blockSize;
                    sizeClass++;
                    continue;
                }
            }

            tree.InsertAt(address, parent, asLeftChild);
            return;
        }
    }

    // Frees an over-size block as individual top-class blocks, after checking none is already free.
    private void FreeTopBlocks(byte* pointer, nuint blockSize)
    {
        ref RedBlackTree top = ref Tree(_topClass);
        nuint address = (nuint)pointer;
        for (nuint offset = 0; offset < blockSize; offset += _maximumBlockSize)
        {
            FreeNode* existing = top.Locate(address + offset, out FreeNode* predecessor, out FreeNode* successor, out _, out _);
            if (Overlaps(existing, predecessor, successor, address + offset, _maximumBlockSize)
                || CacheContains(_topClass, address + offset))
            {
                Allocator.ThrowDoubleFree(Name, pointer);
            }
        }

        for (nuint offset = 0; offset < blockSize; offset += _maximumBlockSize)
        {
            FreeBlock(address + offset, _topClass);
        }
    }

    // Whether a block of `blockSize` bytes at `address` is, or overlaps, a free block of the same
    // class: the block found at that address, or its in-order neighbours (all `blockSize` long).
    private static bool Overlaps(FreeNode* existing, FreeNode* predecessor, FreeNode* successor, nuint address, nuint blockSize) =>
        existing != null
        || (predecessor != null && (nuint)predecessor + blockSize > address)
        || (successor != null && address + blockSize > (nuint)successor);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref BlockCache Cache(int sizeClass) =>
        ref Unsafe.Add(ref Unsafe.As<CacheArray, BlockCache>(ref _caches), sizeClass);

    // Limit k = the per-class byte budget in blocks, clamped to [1, MaximumCachedBlocksPerClass].
    private void SetCacheLimits()
    {
        nuint budget = Math.Min(CacheBytesPerClass, (nuint)_capacity / 32);
        for (int k = 0; k <= _topClass; k++)
        {
            nuint blocks = budget / (_minimumBlockSize << k);
            Cache(k).Limit = (int)Math.Clamp(blocks, 1, (nuint)MaximumCachedBlocksPerClass);
        }
    }

    private bool HasCachedBlocks()
    {
        for (int k = 0; k <= _topClass; k++)
        {
            if (Cache(k).Count != 0)
            {
                return true;
            }
        }

        return false;
    }

    // Smallest class first, although the result (everything coalesced that can be) does not depend
    // on the order: of two free buddies, the second to reach its tree finds the first there.
    private void FlushCaches()
    {
        for (int k = 0; k <= _topClass; k++)
        {
            ref BlockCache cache = ref Cache(k);
            while (cache.Head != null)
            {
                nuint* block = cache.Head;
                cache.Head = (nuint*)block[0];
                cache.Count--;
                FreeBlock((nuint)block, k);
            }
        }
    }

    // Forgets the cached blocks (their memory is being re-carved or released); keeps the limits.
    private void EmptyCaches()
    {
        for (int k = 0; k < MaximumClassCount; k++)
        {
            ref BlockCache cache = ref Cache(k);
            cache.Head = null;
            cache.Count = 0;
        }
    }

    private bool CacheContains(int sizeClass, nuint address)
    {
        for (nuint* block = Cache(sizeClass).Head; block != null; block = (nuint*)block[0])
        {
            if ((nuint)block == address)
            {
                return true;
            }
        }

        return false;
    }

    private void CacheRemove(int sizeClass, nuint address)
    {
        ref BlockCache cache = ref Cache(sizeClass);
        nuint* previous = null;
        for (nuint* block = cache.Head; block != null; previous = block, block = (nuint*)block[0])
        {
            if ((nuint)block == address)
            {
                if (previous == null)
                {
                    cache.Head = (nuint*)block[0];
                }
                else
                {
                    previous[0] = block[0];
                }

                cache.Count--;
                return;
            }
        }

        Debug.Fail("the block to remove is not in the cache");
    }

    // The block being freed carries its free stamp: it is free (a double free, or a free with the
    // wrong size) if it is cached in its class, or if it lies in a free block of its class or a
    // larger one (in a tree or a cache); otherwise the stamp is stale or the caller's data, and the
    // free goes on. Checked before anything changes, so a double free leaves the allocator as it was.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void CheckNotFree(nuint address, int sizeClass)
    {
        for (int k = sizeClass; k <= _topClass; k++)
        {
            nuint container = address & ~((_minimumBlockSize << k) - 1);
            if (container < _start)
            {
                break;
            }

            if (Tree(k).Find(container) != null || CacheContains(k, container))
            {
                Allocator.ThrowDoubleFree(Name, (void*)address);
            }
        }
    }

    [InlineArray(MaximumClassCount)]
    private struct TreeArray
    {
        private RedBlackTree _element;
    }

    // Head: the most recently cached block (null when empty); each block's word 0 links the next.
    private struct BlockCache
    {
        public nuint* Head;
        public int Count;
        public int Limit;
    }

    [InlineArray(MaximumClassCount)]
    private struct CacheArray
    {
        private BlockCache _element;
    }
}
