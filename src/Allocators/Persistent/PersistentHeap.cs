using static AllocHosting.Allocators.PersistentHeapLayout;

namespace AllocHosting.Allocators;

/// <summary>
/// An allocator whose blocks and bookkeeping live in a file (through a
/// <see cref="PersistentMemorySource"/>), so that <see cref="Open"/> after a restart, or after a
/// crash, finds every block that was committed, with its contents as last flushed.
/// </summary>
/// <remarks>
/// <para>
/// <b>Offsets.</b> The file is mapped at a different address in every run, so blocks are named by
/// offset: <see cref="AllocateOffset"/> / <see cref="FreeOffset"/>, with <see cref="ToPointer"/> and
/// <see cref="ToOffset"/> between the two; structures inside the file link by offset. The
/// <see cref="Root"/> offset is the application's entry point (its first structure), zero until set.
/// It is also an <see cref="IAllocator"/> (pointers valid for this run), so any code written against
/// the contract can use it; 0 is never a block's offset.
/// </para>
/// <para>
/// <b>Crash consistency.</b> The data area is a tiling of blocks, each with a 16-byte header whose
/// 8-byte tag (size, state, check) says where the next block starts (see the file format in the
/// source). Every operation prepares what is not yet reachable (the header of a split-off remainder,
/// the usable size of a new block), makes it durable, and then commits with one aligned 8-byte store
/// of one reachable tag, itself made durable before the call returns; freeing commits with the
/// block's own tag and then merges free neighbours, one tag store each. So:
/// an allocation is committed when <see cref="AllocateOffset"/> (or <see cref="IAllocator.Allocate"/>)
/// returns and a free when <see cref="FreeOffset"/> returns; a crash (the process killed at any
/// instruction, or the machine losing power) leaves every committed block live, at its offset,
/// overlapping no other, and loses nothing else: an operation in flight either took effect or did not,
/// and a free whose merges were cut short is finished by the recovery scan that <see cref="Open"/>
/// runs (it merges adjacent free blocks). A block's <em>contents</em> are the application's: they
/// are durable once passed to <see cref="Flush(long, nuint)"/>. A block allocated but not yet linked
/// into the application's structures when the process dies is committed and stays allocated;
/// <see cref="GetLiveBlocks"/> lists every live block, so that the application can free those it
/// cannot reach.
/// </para>
/// <para>
/// <b>Opening.</b> <see cref="Open"/> checks the header (magic, version, checksum, recorded length,
/// root) and scans every block header before it writes anything: a foreign, truncated, extended,
/// newer-version or corrupted file throws <see cref="InvalidDataException"/> saying what is wrong and
/// is left byte for byte as it was.
/// </para>
/// <para>
/// <b>Costs and limits.</b> Free blocks are indexed in memory (by size for best fit, by end for
/// merging), rebuilt by the scan at open, which reads every block header. Each allocation or free
/// makes two or three 16-byte ranges durable (an <c>msync</c> each without DAX and libpmem2). The
/// file never grows; a shrink keeps the block's space, and a grow beyond the block's slack moves the
/// block. Not thread-safe; one heap per file at a time (the file is locked).
/// </para>
/// </remarks>
public sealed unsafe partial class PersistentHeap : AllocatorBase
{
    private readonly PersistentMemorySource _source;
    private readonly long _length;
    private byte* _base;

    // The in-memory index, rebuilt from the file by the scan at open. Free blocks by (size, offset)
    // for best fit, by offset (their size) and by end (their offset) for merging; live blocks by
    // offset (the block's start, not the payload) with their recorded usable size.
    private readonly SortedSet<(long Size, long Offset)> _freeBySize = [];
    private readonly Dictionary<long, long> _freeSizeByOffset = [];
    private readonly Dictionary<long, long> _freeOffsetByEnd = [];
    private readonly Dictionary<long, long> _live = [];

    private long _bytesInUse;
    private long _peakBytesInUse;
    private long _allocationCount;
    private long _deallocationCount;
    private long _totalBytesAllocated;

    private PersistentHeap(PersistentMemorySource source)
    {
        _source = source;
        _length = source.Length;
        _base = source.Address;
    }

    /// <summary>The mapped file.</summary>
    public PersistentMemorySource Source => _source;

    /// <summary>The bytes the data area holds (the file less its header), headers of blocks included.</summary>
    public long Capacity => _length - DataStart;

    /// <summary>
    /// The application's entry point: an offset in the data area (typically a block's) or 0. Setting
    /// it makes it durable before returning (one aligned 8-byte store).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is neither 0 nor an offset in the data area.</exception>
    /// <exception cref="ObjectDisposedException">The heap is disposed.</exception>
    public long Root
    {
        get => Volatile.Read(ref *(long*)(Base + RootOffset));
        set
        {
            byte* start = Base;
            if (value != 0 && (value < DataStart || value >= _length))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, $"The root must be 0 or an offset in the heap's data area ({DataStart} to {_length - 1}).");
            }

            Step(31);
            Volatile.Write(ref *(long*)(start + RootOffset), value);
            _source.Flush(start + RootOffset, sizeof(long));
        }
    }

    /// <summary>Test hook: called with a step number before every store that changes the file, so that a test can cut an operation short there (by throwing).</summary>
    internal Action<int>? CrashPoint { get; set; }

    /// <summary>How many adjacent free blocks the recovery scan at open merged (frees cut short by a crash).</summary>
    internal int RecoveredMerges { get; private set; }

    /// <inheritdoc />
    public override AllocatorStatistics Statistics => new(
        _bytesInUse, _peakBytesInUse, Capacity, _allocationCount, _deallocationCount, FailureCount, _totalBytesAllocated);

    private byte* Base
    {
        get
        {
            byte* start = _base;
            ObjectDisposedException.ThrowIf(start == null, this);
            return start;
        }
    }

    /// <summary>
    /// Allocates a block of <paramref name="size"/> bytes aligned to <paramref name="alignment"/> and
    /// returns its offset; the allocation is committed (it survives a crash) when this returns.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or larger than the heap.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two.</exception>
    /// <exception cref="AllocatorExhaustedException">No free block is large enough.</exception>
    public long AllocateOffset(nuint size, nuint alignment = 16)
    {
        ArgumentOutOfRangeException.ThrowIfZero(size);
        return (long)(Allocate(size, alignment) - Base);
    }

    /// <summary>Allocates like <see cref="AllocateOffset"/>, reporting exhaustion by returning <see langword="false"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two.</exception>
    public bool TryAllocateOffset(nuint size, nuint alignment, out long offset)
    {
        ArgumentOutOfRangeException.ThrowIfZero(size);
        bool allocated = TryAllocate(size, alignment, out byte* pointer);
        offset = allocated ? (long)(pointer - Base) : 0;
        return allocated;
    }

    /// <summary>Frees the block at <paramref name="offset"/>, allocated with <paramref name="size"/> bytes; committed when this returns.</summary>
    /// <exception cref="ArgumentException">The offset is not the start of a live block, or the size does not name it (its usable size differs). Nothing changed.</exception>
    public void FreeOffset(long offset, nuint size)
    {
        ArgumentOutOfRangeException.ThrowIfZero(size);
        Deallocate(ToPointer(offset), size, 1);
    }

    /// <summary>The address of <paramref name="offset"/> in this run's mapping.</summary>
    /// <exception cref="ArgumentException"><paramref name="offset"/> does not lie in the data area.</exception>
    public byte* ToPointer(long offset)
    {
        byte* start = Base;
        if (offset < DataStart || offset >= _length)
        {
            throw new ArgumentException($"Offset {offset} does not lie in the heap's data area ({DataStart} to {_length - 1}) of '{_source.Path}'.", nameof(offset));
        }

        return start + offset;
    }

    /// <summary>The offset of <paramref name="pointer"/>, an address in this run's mapping of the data area.</summary>
    /// <exception cref="ArgumentException"><paramref name="pointer"/> does not point into the data area.</exception>
    public long ToOffset(byte* pointer)
    {
        byte* start = Base;
        if (pointer < start + DataStart || pointer >= start + _length)
        {
            throw new ArgumentException($"0x{(nuint)pointer:X} does not point into the data area of '{_source.Path}' (mapped at 0x{(nuint)start:X}).", nameof(pointer));
        }

        return (long)(pointer - start);
    }

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> durable (the application's contents: the heap flushes its own bookkeeping).</summary>
    /// <exception cref="ArgumentException">The range does not lie in the data area.</exception>
    public void Flush(long offset, nuint length)
    {
        byte* pointer = ToPointer(offset);
        if (length > (nuint)(_length - offset))
        {
            throw new ArgumentException($"{length} bytes at offset {offset} run past the end of the heap ({_length} bytes).", nameof(length));
        }

        _source.Flush(pointer, length);
    }

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="pointer"/> durable; see <see cref="Flush(long, nuint)"/>.</summary>
    /// <exception cref="ArgumentException">The range does not lie in the data area.</exception>
    public void Flush(byte* pointer, nuint length) => Flush(ToOffset(pointer), length);

    /// <summary>Every live block, in file order: after a crash, the blocks an application may have allocated but not linked yet are among them.</summary>
    public IReadOnlyList<PersistentHeapBlock> GetLiveBlocks()
    {
        _ = Base;
        return [.. _live.OrderBy(pair => pair.Key).Select(pair => new PersistentHeapBlock(pair.Key + BlockHeaderLength, pair.Value))];
    }

    /// <inheritdoc />
    /// <remarks>Any address in the data area of the file: a range test.</remarks>
    public override bool Owns(byte* pointer)
    {
        byte* start = _base;
        return start != null && pointer >= start + DataStart && pointer < start + _length;
    }

    /// <inheritdoc />
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment) => Allocator.AlignUp(size, (nuint)Granule);

    /// <inheritdoc />
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        byte* start = Base;
        if (size > (nuint)Capacity)
        {
            return null;
        }

        long usable = (long)Allocator.AlignUp(size, (nuint)Granule);
        long need = Math.Max(BlockHeaderLength + usable, MinimumBlock);
        long align = Math.Max((long)alignment, Granule);
        foreach ((long freeSize, long freeOffset) in _freeBySize.GetViewBetween((need, long.MinValue), (long.MaxValue, long.MaxValue)))
        {
            if (TryPlace(freeOffset, freeSize, need, align, out long block, out long blockSize))
            {
                // Leaves the loop before the index changes under the enumerator.
                Commit(start, freeOffset, freeSize, block, blockSize, usable);
                return start + block + BlockHeaderLength;
            }
        }

        return null;
    }

    /// <inheritdoc />
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        byte* start = Base;
        long block = LiveBlock(start, pointer, size);
        long blockSize = SizeOf(start, block);

        // Commit: the block's own tag says free. Then merge with free neighbours, one tag store each.
        Step(1);
        WriteTag(start, block, blockSize, StateFree);
        _live.Remove(block, out long usable);
        _bytesInUse -= usable;
        _deallocationCount++;

        if (_freeSizeByOffset.TryGetValue(block + blockSize, out long nextSize))
        {
            Step(2);
            WriteTag(start, block, blockSize + nextSize, StateFree);
            RemoveFree(block + blockSize, nextSize);
            blockSize += nextSize;
        }

        if (_freeOffsetByEnd.TryGetValue(block, out long previous))
        {
            long previousSize = _freeSizeByOffset[previous];
            Step(3);
            WriteTag(start, previous, previousSize + blockSize, StateFree);
            RemoveFree(previous, previousSize);
            block = previous;
            blockSize += previousSize;
        }

        AddFree(block, blockSize);
    }

    /// <inheritdoc />
    /// <remarks>In place when the block's slack holds the new size (its space is never extended into a neighbour).</remarks>
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        byte* start = Base;
        long block = LiveBlock(start, pointer, currentSize);
        long usable = (long)Allocator.AlignUp(newSize, (nuint)Granule);
        if (newSize > (nuint)Capacity || BlockHeaderLength + usable > SizeOf(start, block))
        {
            return false;
        }

        SetUsable(start, block, usable);
        return true;
    }

    /// <inheritdoc />
    /// <remarks>Always in place: the block keeps its space, and records the smaller usable size.</remarks>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        byte* start = Base;
        long block = LiveBlock(start, pointer, currentSize);
        SetUsable(start, block, (long)Allocator.AlignUp(newSize, (nuint)Granule));
        return true;
    }

    /// <inheritdoc />
    /// <remarks>Unmaps and closes the file; the heap's state is in the file already (nothing is written here).</remarks>
    protected override void Dispose(bool disposing)
    {
        if (disposing && _base != null)
        {
            _base = null;
            _source.Dispose();
        }

        base.Dispose(disposing);
    }

    // Where in the free block [freeOffset, +freeSize) a block of `need` bytes with its payload aligned
    // to `align` goes: the block start and its size (the remainder joins it when too small to be a block).
    private static bool TryPlace(long freeOffset, long freeSize, long need, long align, out long block, out long blockSize)
    {
        long payload = AlignUp(freeOffset + BlockHeaderLength, align);
        long gap = payload - BlockHeaderLength - freeOffset;
        if (gap != 0 && gap < MinimumBlock)
        {
            payload = AlignUp(freeOffset + BlockHeaderLength + MinimumBlock, align);
            gap = payload - BlockHeaderLength - freeOffset;
        }

        block = freeOffset + gap;
        long end = block + need;
        long freeEnd = freeOffset + freeSize;
        blockSize = need;
        if (end > freeEnd || end < block)
        {
            return false;
        }

        if (freeEnd - end < MinimumBlock)
        {
            blockSize = freeEnd - block;
        }

        return true;
    }

    // The allocation's stores, in order; only the last is reachable before it lands:
    // 1. the remainder's header (inside the free block, unreachable), made durable;
    // 2. the new block's usable size, and its tag when a gap is left before it (both unreachable), made durable;
    // 3. the commit: the free block's tag (shrunk to the gap, still free), or the new block's tag when there is no gap.
    private void Commit(byte* start, long freeOffset, long freeSize, long block, long blockSize, long usable)
    {
        long gap = block - freeOffset;
        long tailOffset = block + blockSize;
        long tail = freeOffset + freeSize - tailOffset;
        if (tail != 0)
        {
            Step(11);
            WriteTag(start, tailOffset, tail, StateFree);
        }

        Step(12);
        *(long*)(start + block + sizeof(ulong)) = usable;
        if (gap != 0)
        {
            *(ulong*)(start + block) = Tag(block, blockSize, StateLive);
        }

        _source.Flush(start + block, BlockHeaderLength);

        Step(13);
        if (gap != 0)
        {
            WriteTag(start, freeOffset, gap, StateFree);
        }
        else
        {
            WriteTag(start, block, blockSize, StateLive);
        }

        RemoveFree(freeOffset, freeSize);
        if (gap != 0)
        {
            AddFree(freeOffset, gap);
        }

        if (tail != 0)
        {
            AddFree(tailOffset, tail);
        }

        _live.Add(block, usable);
        _bytesInUse += usable;
        _peakBytesInUse = Math.Max(_peakBytesInUse, _bytesInUse);
        _allocationCount++;
        _totalBytesAllocated += usable;
    }

    // The block whose payload is `pointer`, checked against the live index and the size given.
    private long LiveBlock(byte* start, byte* pointer, nuint size)
    {
        long block = (long)(pointer - start) - BlockHeaderLength;
        if (pointer < start + DataStart + BlockHeaderLength || pointer >= start + _length || !_live.TryGetValue(block, out long usable))
        {
            throw new ArgumentException(
                $"0x{(nuint)pointer:X} is not the start of a live block of the persistent heap '{_source.Path}' (memory from elsewhere, an address inside a block, or a block already freed). Nothing was changed.",
                nameof(pointer));
        }

        if ((long)Allocator.AlignUp(size, (nuint)Granule) != usable || size > (nuint)usable)
        {
            throw new ArgumentException(
                $"The block at offset {block + BlockHeaderLength} holds {usable} bytes; {size} bytes does not name it (sizes from {usable - Granule + 1} to {usable} do). Nothing was changed.",
                nameof(size));
        }

        return block;
    }

    private void SetUsable(byte* start, long block, long usable)
    {
        Step(21);
        Volatile.Write(ref *(long*)(start + block + sizeof(ulong)), usable);
        _source.Flush(start + block + sizeof(ulong), sizeof(ulong));
        long old = _live[block];
        _live[block] = usable;
        _bytesInUse += usable - old;
        _peakBytesInUse = Math.Max(_peakBytesInUse, _bytesInUse);
    }

    // One commit: an aligned 8-byte store of a reachable tag, made durable before anything else is written.
    private void WriteTag(byte* start, long offset, long size, ulong state)
    {
        Volatile.Write(ref *(ulong*)(start + offset), Tag(offset, size, state));
        _source.Flush(start + offset, sizeof(ulong));
    }

    private static long SizeOf(byte* start, long block)
    {
        TryDecode(block, *(ulong*)(start + block), out long size, out _);
        return size;
    }

    private void AddFree(long offset, long size)
    {
        _freeBySize.Add((size, offset));
        _freeSizeByOffset.Add(offset, size);
        _freeOffsetByEnd.Add(offset + size, offset);
    }

    private void RemoveFree(long offset, long size)
    {
        _freeBySize.Remove((size, offset));
        _freeSizeByOffset.Remove(offset);
        _freeOffsetByEnd.Remove(offset + size);
    }

    private void Step(int step) => CrashPoint?.Invoke(step);

    private static long AlignUp(long value, long alignment) => (value + alignment - 1) & ~(alignment - 1);
}
