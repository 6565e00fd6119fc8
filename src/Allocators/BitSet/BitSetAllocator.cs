using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// A bitmap allocator: one region divided into equal blocks, with one bit per block, that
/// allocates runs of contiguous blocks by next-fit search and frees them individually (the
/// seed's <c>BitSetAllocator</c>, with its defects W-BS1 … W-BS6 fixed).
/// </summary>
/// <remarks>
/// <para>
/// Use it for medium-lived memory that is freed in any order and sometimes resized, such as the
/// buffers of one request; <see cref="Reset"/> frees everything at once.
/// </para>
/// <code>
/// using var allocator = new BitSetAllocator(NativeMemorySource.Shared, blockSize: 64, memorySize: 64 * 1024);
/// byte* buffer = allocator.Allocate(1000, 8);          // 16 blocks
/// buffer = allocator.GrowingReallocate(buffer, 1000, 3000, 8);
/// allocator.Deallocate(buffer, 3000, 8);
/// </code>
/// <para>
/// Layout: the region holds the blocks, then the bit set (<c>ceil(blocks / 64)</c> 64-bit words),
/// then as many words of run starts (one bit per block, set on the first block of each live run).
/// Block <c>64w + j</c> is bit <c>63 − j</c> of word <c>w</c> (the most significant bit is the
/// lowest address); a set bit is an allocated block. The padding bits of a partial last word are
/// permanently set, so memory past the last block is never handed out. See <see cref="BitSetWord"/>
/// for the word operations and <see cref="FreeRunSearch"/> for the search.
/// </para>
/// <para>
/// Allocation takes <c>ceil(size / BlockSize)</c> blocks. It first looks in the word where the
/// previous allocation ended (the next-fit cursor), then scans to the end of the bit set, then
/// wraps around and scans from the start; the lowest-addressed fit in each scanned word wins.
/// Runs may cross word boundaries. An alignment larger than the block size is honoured by the
/// address of the first block, whatever the region's own alignment. Freeing does not move the
/// cursor.
/// </para>
/// <para>
/// A run that starts a word leaves the cursor at that word rather than at its last one (the
/// words between are full, so what fits next is the same); once such a run is freed, the next
/// request of the same length takes the same blocks, without a scan. Runs of whole words are
/// checked, taken and freed four words at a time, so a 16 KiB request over 64-byte blocks costs
/// about what a one-word request does.
/// </para>
/// <para>
/// Growing extends the run in place when the following blocks are free, otherwise moves it
/// (allocate, copy, free — so a failed grow leaves the block untouched); shrinking frees the
/// tail blocks in place. <see cref="AllocatorBase.Dispose()"/> gives the region back to its
/// source (a region passed in by the caller is left alone).
/// </para>
/// <para>
/// It never grows its region, never touches the contents of blocks (except when a reallocation
/// moves them), and is not thread-safe: callers that share one instance must serialise access.
/// Freeing (and resizing) checks that the pointer is the start of a live block and that the size
/// is its size: a pointer inside a live block, a free block, or a size that rounds to another
/// number of blocks than the block's throws <see cref="ArgumentException"/> and changes nothing
/// (a size that rounds to the same number of blocks is the same block). The check costs
/// O(blocks / 64) word operations; allocation sets one more bit. The run starts take 8 bytes per
/// 64 blocks, so a caller-owned region holds slightly fewer blocks than without them.
/// Each allocation costs at least one block; alignments above 64 blocks are served by a slower
/// scan over aligned positions.
/// </para>
/// </remarks>
public sealed unsafe partial class BitSetAllocator : AllocatorBase, IRegionAllocator
{
    // The region obtained from _source (null when the caller owns the memory); released on Dispose.
    private readonly IMemorySource? _source;
    private byte* _region;
    private readonly nuint _regionSize;

    // Invariant: _blocks is aligned to BlockSize; blocks are [_blocks, _blocks + _blockCount << _blockShift).
    private readonly byte* _blocks;
    private readonly nuint _blockSize;
    private readonly int _blockShift;

    // Invariant: _words holds _wordCount = ceil(_blockCount / 64) words right after the blocks;
    // the padding bits of a partial last word are always set. All three become 0 on Dispose so
    // that every later call fails without a check on the fast paths.
    private readonly ulong* _words;

    // Invariant: _starts holds _wordCount words right after _words, a bit set on the first block of
    // each live run (so a subset of _words' bits); its padding bits are clear.
    private readonly ulong* _starts;
    private nuint _wordCount;
    private nuint _blockCount;

    // Invariant: _freeBlocks = number of clear bits in the bit set (padding bits are set).
    private nuint _freeBlocks;

    // Invariant: _cursor < _wordCount (or 0): the word where the last allocation ended, or where
    // it started when it started a word.
    private nuint _cursor;

    // Invariant: _cursor <= _highWord, and no word after _highWord holds an allocated block
    // (padding bits aside), so Reset clears only the words a burst of allocations touched.
    private nuint _highWord;

    // The allowed-start masks for alignments of 2^e blocks, e = 0 … 6, relative to the blocks'
    // real address (so a region aligned only to the block size still gives aligned results).
    private AlignedStartMasks _alignedStarts;

    private AllocatorCounters _counters;
    private bool _disposed;

    /// <summary>
    /// Creates an allocator of <c>ceil(<paramref name="memorySize"/> / <paramref name="blockSize"/>)</c>
    /// blocks over one region obtained from <paramref name="source"/>, which it releases on <see cref="AllocatorBase.Dispose()"/>.
    /// </summary>
    /// <param name="source">Where the region comes from.</param>
    /// <param name="blockSize">Bytes per block: a power of two of at least 8 (and at most <see cref="Allocator.MaximumAlignment"/>).</param>
    /// <param name="memorySize">Bytes of blocks wanted (greater than zero); the bit set and the run starts are added to it.</param>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="blockSize"/> is not a power of two between 8 and <see cref="Allocator.MaximumAlignment"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="memorySize"/> is zero or larger than half of <see cref="Allocator.MaximumSize"/>.</exception>
    /// <exception cref="OutOfMemoryException">The source could not provide the region.</exception>
    public BitSetAllocator(IMemorySource source, nuint blockSize, nuint memorySize)
    {
        ArgumentNullException.ThrowIfNull(source);
        ValidateBlockSize(blockSize);
        if (memorySize == 0 || memorySize > Allocator.MaximumSize / 2)
        {
            throw new ArgumentOutOfRangeException(
                nameof(memorySize), memorySize, $"The memory size must be between 1 and {Allocator.MaximumSize / 2} bytes.");
        }

        int shift = BitOperations.TrailingZeroCount(blockSize);
        nuint blockCount = (memorySize + blockSize - 1) >> shift;
        nuint wordCount = (blockCount + 63) >> 6;

        // A source aligned more coarsely than a block needs no slack; otherwise room to align up.
        nuint slack = source.Granularity >= blockSize ? 0 : blockSize - source.Granularity;
        nuint regionSize = (blockCount << shift) + (2 * wordCount * sizeof(ulong)) + slack;
        byte* region = source.Obtain(regionSize);

        _source = source;
        _region = region;
        _regionSize = regionSize;
        _blockSize = blockSize;
        _blockShift = shift;
        _blocks = (byte*)Allocator.AlignUp((nuint)region, blockSize);
        _blockCount = blockCount;
        _wordCount = wordCount;
        _words = (ulong*)(_blocks + (blockCount << shift));
        _starts = _words + _wordCount;
        Initialise();
    }

    /// <summary>
    /// Creates an allocator over memory the caller owns: as many blocks as fit in
    /// <paramref name="region"/> together with their bit set and run starts (stored right after
    /// the blocks: 16 bytes per 64 blocks or part of 64).
    /// Disposing the allocator does not free the region.
    /// </summary>
    /// <param name="region">The first byte of the memory; need not be aligned (the blocks start at the next multiple of <paramref name="blockSize"/>).</param>
    /// <param name="regionSize">Bytes available at <paramref name="region"/>.</param>
    /// <param name="blockSize">Bytes per block: a power of two of at least 8 (and at most <see cref="Allocator.MaximumAlignment"/>).</param>
    /// <exception cref="ArgumentNullException"><paramref name="region"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="blockSize"/> is invalid, or the region cannot hold one block and its bit set.</exception>
    public BitSetAllocator(byte* region, nuint regionSize, nuint blockSize)
    {
        if (region == null)
        {
            throw new ArgumentNullException(nameof(region));
        }

        ValidateBlockSize(blockSize);
        int shift = BitOperations.TrailingZeroCount(blockSize);
        nuint padding = Allocator.AlignUp((nuint)region, blockSize) - (nuint)region;
        nuint available = regionSize > padding ? regionSize - padding : 0;

        // Every full word of the bit set costs 64 blocks plus 16 bytes (a word of blocks and a word
        // of run starts); a partial word whatever is left.
        nuint groupBytes = (blockSize * 64) + (2 * sizeof(ulong));
        nuint groups = available / groupBytes;
        nuint rest = available - (groups * groupBytes);
        nuint extra = rest > 2 * sizeof(ulong) ? Math.Min((rest - (2 * sizeof(ulong))) >> shift, 63) : 0;
        nuint blockCount = (groups * 64) + extra;
        if (blockCount == 0)
        {
            throw new ArgumentException(
                $"A region of {regionSize} bytes cannot hold one block of {blockSize} bytes and its bit set.", nameof(regionSize));
        }

        _region = region;
        _regionSize = regionSize;
        _blockSize = blockSize;
        _blockShift = shift;
        _blocks = region + padding;
        _blockCount = blockCount;
        _wordCount = (blockCount + 63) >> 6;
        _words = (ulong*)(_blocks + (blockCount << shift));
        _starts = _words + _wordCount;
        Initialise();
    }

    /// <summary>Bytes per block; every allocation is a whole number of blocks.</summary>
    public nuint BlockSize => _blockSize;

    /// <summary>Blocks in the region (zero once disposed).</summary>
    public nuint BlockCount => _blockCount;

    /// <summary>Blocks free now.</summary>
    public nuint FreeBlockCount => _freeBlocks;

    /// <inheritdoc />
    /// <remarks>The blocks only: the bit set and run starts that follow them are not part of the range.</remarks>
    public MemoryRange Range => new((nuint)_blocks, (nuint)_blocks + (_blockCount << _blockShift));

    /// <inheritdoc />
    /// <remarks><see cref="AllocatorStatistics.BytesInUse"/> counts whole blocks; the capacity is <c>BlockCount × BlockSize</c>.</remarks>
    public override AllocatorStatistics Statistics =>
        _counters.ToStatistics((long)(_blockCount << _blockShift), FailureCount);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public override bool Owns(byte* pointer) => (nuint)(pointer - _blocks) < (_blockCount << _blockShift);

    /// <summary>
    /// Frees every block at once and moves the cursor to the start. Every pointer handed out
    /// before becomes invalid; statistics keep their totals and report nothing in use.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ClearBitSet(_highWord + 1);
        _counters.BytesInUse = 0;
    }

    /// <summary>
    /// Bytes from the start of the blocks that hold every block allocated since the last
    /// <see cref="Reset"/> (whole bit set words, so up to 64 blocks more than the highest one):
    /// what a caller that clears used memory must clear.
    /// </summary>
    internal nuint HighWaterBytes => Math.Min((_highWord + 1) * 64, _blockCount) << _blockShift;

    /// <inheritdoc />
    /// <remarks>
    /// The fast paths take a run in the cursor word, or a long run starting at it; every other
    /// request (wider alignment, or no fit at the cursor) goes to <see cref="AllocateSlow"/>.
    /// </remarks>
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        nuint count = (size + _blockSize - 1) >> _blockShift;

        if (alignment <= _blockSize && _wordCount != 0)
        {
            if (count <= 64)
            {
                // Fast path: a run inside the cursor word.
                ulong* word = _words + _cursor;
                ulong starts = BitSetWord.FreeRunStarts(*word, (int)count);
                if (starts != 0)
                {
                    int first = BitOperations.LeadingZeroCount(starts);
                    *word |= BitSetWord.BlocksMask(first, (int)count);
                    _starts[_cursor] |= 1UL << (63 - first);
                    _freeBlocks -= count;
                    _counters.Allocated(size, count << _blockShift);
                    return _blocks + (((_cursor << 6) + (nuint)first) << _blockShift);
                }
            }
            else
            {
                // Fast path for long runs: what the scan would find first, without the scan — the
                // common case of a long run freed and asked for again at the same place.
                byte* run = TryTakeCursorWords(count, size);
                if (run != null)
                {
                    return run;
                }
            }
        }

        return AllocateSlow(size, count, alignment);
    }

    /// <inheritdoc />
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        // The checks of ValidateLiveRun, fused with the clearing: one pass over the run's words.
        nuint first = BlockOf(pointer);
        nuint count = (size + _blockSize - 1) >> _blockShift;
        if (count > _blockCount - first)
        {
            ThrowInvalidPointer(pointer);
        }

        int offset = (int)(first & 63);
        if (count <= (nuint)(64 - offset))
        {
            // Fast path: the run lies in one word; its blocks all allocated, and of its run starts only the first.
            nuint w = first >> 6;
            ulong run = BitSetWord.BlocksMask(offset, (int)count);
            ulong start = 1UL << (63 - offset);
            if ((_words[w] & run) != run || (_starts[w] & run) != start || !EndsRun(first + count))
            {
                ThrowNotLiveRun(pointer, first, count);
            }

            _words[w] &= ~run;
            _starts[w] &= ~start;
        }
        else if (!EndsRun(first + count) || !BitSetWord.TryClearLiveRun(_words, _starts, first, count))
        {
            ThrowNotLiveRun(pointer, first, count);
        }

        _freeBlocks += count;
        _counters.Freed(count << _blockShift);
    }

    /// <inheritdoc />
    /// <remarks>Succeeds when the blocks after the run are free (or no more blocks are needed).</remarks>
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint first = ValidateLiveRun(pointer, currentSize, out nuint currentCount);
        nuint newCount = (newSize + _blockSize - 1) >> _blockShift;
        if (newCount <= currentCount)
        {
            return true;
        }

        nuint extra = newCount - currentCount;
        nuint next = first + currentCount;
        if (extra > _blockCount - next || !BitSetWord.IsRunClear(_words, next, extra))
        {
            return false;
        }

        BitSetWord.SetRun(_words, next, extra);
        nuint lastWord = (next + extra - 1) >> 6;
        if (lastWord > _highWord)
        {
            _highWord = lastWord;
        }

        _freeBlocks -= extra;
        _counters.Resized((long)(extra << _blockShift));
        return true;
    }

    /// <inheritdoc />
    /// <remarks>Always succeeds: the blocks no longer needed are freed.</remarks>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint first = ValidateLiveRun(pointer, currentSize, out nuint currentCount);
        nuint newCount = (newSize + _blockSize - 1) >> _blockShift;
        if (newCount < currentCount)
        {
            nuint freed = currentCount - newCount;
            BitSetWord.ClearRun(_words, first + newCount, freed);
            _freeBlocks += freed;
            _counters.Resized(-(long)(freed << _blockShift));
        }

        return true;
    }

    /// <inheritdoc />
    /// <remarks>
    /// In place when the following blocks are free; otherwise into a new run (allocate, copy,
    /// free); and when only a run overlapping the block's own blocks fits, into that run with an
    /// overlap-safe copy. On failure the block is untouched.
    /// </remarks>
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (TryGrowInPlaceCore(pointer, currentSize, newSize, alignment))
        {
            return pointer;
        }

        byte* moved = MoveBlock(pointer, currentSize, newSize, alignment);
        if (moved != null)
        {
            return moved;
        }

        return GrowOverOwnBlocks(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    /// <remarks>The size rounded up to whole blocks.</remarks>
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment) =>
        Allocator.AlignUp(size, _blockSize);

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _blockCount = 0;
        _wordCount = 0;
        _freeBlocks = 0;
        _cursor = 0;
        _highWord = 0;
        if (_source is not null && _region != null)
        {
            _source.Release(_region, _regionSize);
        }

        _region = null;
        base.Dispose(disposing);
    }

    private static void ValidateBlockSize(nuint blockSize)
    {
        if (!Allocator.IsValidAlignment(blockSize) || blockSize < 8)
        {
            throw new ArgumentException(
                $"The block size {blockSize} must be a power of two between 8 and {Allocator.MaximumAlignment}.", nameof(blockSize));
        }
    }

    private void Initialise()
    {
        nuint phase = (nuint)_blocks >> _blockShift;
        for (int e = 0; e <= 6; e++)
        {
            int step = 1 << e;
            int residue = (int)((0 - phase) & (nuint)(step - 1));
            _alignedStarts[e] = BitSetWord.AllowedStarts(step, residue);
        }

        ClearBitSet(_wordCount);
    }

    /// <summary>Frees every block, given that words from <paramref name="touchedWords"/> on are already free.</summary>
    private void ClearBitSet(nuint touchedWords)
    {
        NativeMemory.Clear(_words, touchedWords * sizeof(ulong));
        NativeMemory.Clear(_starts, touchedWords * sizeof(ulong));
        int used = (int)(_blockCount & 63);
        if (used != 0)
        {
            // Padding blocks past the end look allocated forever (W-BS3).
            _words[_wordCount - 1] |= BitSetWord.BottomMask(64 - used);
        }

        _freeBlocks = _blockCount;
        _cursor = 0;
        _highWord = 0;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateSlow(nuint size, nuint count, nuint alignment)
    {
        nuint first = FindFree(count, alignment);
        if (first == FreeRunSearch.NotFound)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return null;
        }

        return Take(first, count, size);
    }

    /// <summary>
    /// Marks a found run allocated and moves the cursor to the word where it ends — or, for a run
    /// that starts a word, to the word where it starts.
    /// </summary>
    private byte* Take(nuint first, nuint count, nuint size)
    {
        BitSetWord.SetRun(_words, first, count);
        MarkRunStart(first);
        nuint lastWord = (first + count - 1) >> 6;

        // The words a word-aligned run covers are all full, so scanning from its first word finds
        // what scanning from its last would; but once the run is freed, the next request of the
        // same size lands on the same blocks instead of creeping through the region (and through
        // the cache) a few words per allocation.
        _cursor = (first & 63) == 0 ? first >> 6 : lastWord;
        if (lastWord > _highWord)
        {
            _highWord = lastWord;
        }
        _freeBlocks -= count;
        _counters.Allocated(size, count << _blockShift);
        return _blocks + (first << _blockShift);
    }

    /// <summary>The first block of a free run of <paramref name="count"/> blocks whose address is aligned to <paramref name="alignment"/>, or <see cref="FreeRunSearch.NotFound"/>.</summary>
    private nuint FindFree(nuint count, nuint alignment)
    {
        if (count > _freeBlocks)
        {
            return FreeRunSearch.NotFound;
        }

        int exponent = alignment <= _blockSize ? 0 : BitOperations.TrailingZeroCount(alignment) - _blockShift;
        return exponent <= 6
            ? FreeRunSearch.NextFit(_words, _wordCount, _cursor, count, _alignedStarts[exponent])
            : FreeRunSearch.NextFitWidelyAligned(_words, _blockCount, (nuint)_blocks, _blockShift, _cursor, count, alignment);
    }

    /// <summary>
    /// Takes the <paramref name="count"/> (more than 64) blocks from the start of the cursor word
    /// on if they are free; the cursor stays. Returns null, changing nothing, if they are not.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* TryTakeCursorWords(nuint count, nuint size)
    {
        nuint wholeWords = count >> 6;
        int tail = (int)(count & 63);
        nuint lastWord = _cursor + wholeWords - (tail == 0 ? 1u : 0u);
        if (lastWord >= _wordCount)
        {
            return null;
        }

        ulong* run = _words + _cursor;
        ulong tailMask = BitSetWord.TopMask(tail);
        if ((run[wholeWords - (tail == 0 ? 1u : 0u)] & tailMask) != 0
            || !BitSetWord.TryInvertWords(run, wholeWords, 0))
        {
            return null;
        }

        if (tail != 0)
        {
            // (Only then: a scalar store still in flight stalls a vector load over its word, and
            // the next allocation here checks these words with vector loads.)
            run[wholeWords] |= tailMask;
        }

        _starts[_cursor] |= 1UL << 63;
        if (lastWord > _highWord)
        {
            _highWord = lastWord;
        }

        _freeBlocks -= count;
        _counters.Allocated(size, count << _blockShift);
        return _blocks + ((_cursor << 6) << _blockShift);
    }

    /// <summary>One allowed-start mask per alignment exponent 0 … 6 (see <see cref="BitSetWord.AllowedStarts"/>).</summary>
    [InlineArray(7)]
    private struct AlignedStartMasks
    {
        private ulong _mask;
    }
}
