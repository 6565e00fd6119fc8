using System.Numerics;

namespace AllocHosting.Allocators;

// Diagnostics: which blocks are allocated, and the check of the bit set against the bookkeeping.
// Neither is on an allocation path.
public sealed unsafe partial class BitSetAllocator
{
    /// <summary>
    /// Whether block <paramref name="block"/> (0 being the block at <see cref="Range"/>'s start)
    /// is allocated now: with <see cref="FreeBlockCount"/>, a way to see where the free runs lie
    /// when a request does not fit. O(1).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="block"/> is not less than <see cref="BlockCount"/>.</exception>
    public bool IsBlockAllocated(nuint block)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(block, _blockCount);
        return (_words[block >> 6] & (1UL << (63 - (int)(block & 63)))) != 0;
    }

    /// <summary>
    /// Checks the bit set against the allocator's bookkeeping, for tests and debugging:
    /// <see cref="FreeBlockCount"/> equals the number of clear bits; the padding bits past the
    /// last block are set; no block is allocated in a word after the high-water word (so
    /// <see cref="Reset"/> clears every allocated block); and the next-fit cursor lies at or before
    /// that word; and the run starts mark only allocated blocks, never a padding bit, and at least
    /// every allocated block that follows a free one. O(blocks / 64); it changes nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">An invariant is violated (the allocator is corrupted, for example by a write past a block into the bit set).</exception>
    public void Validate()
    {
        nuint free = 0;
        for (nuint w = 0; w < _wordCount; w++)
        {
            free += (nuint)(64 - BitOperations.PopCount(_words[w]));
        }

        if (free != _freeBlocks)
        {
            throw new InvalidOperationException($"The bit set has {free} free blocks but the allocator counts {_freeBlocks}.");
        }

        int used = (int)(_blockCount & 63);
        ulong padding = used == 0 ? 0 : BitSetWord.BottomMask(64 - used);
        if (_wordCount != 0 && (_words[_wordCount - 1] & padding) != padding)
        {
            throw new InvalidOperationException("A padding bit past the last block is clear, so memory past the region could be handed out.");
        }

        for (nuint w = _highWord + 1; w < _wordCount; w++)
        {
            ulong allocated = w == _wordCount - 1 ? _words[w] & ~padding : _words[w];
            if (allocated != 0)
            {
                throw new InvalidOperationException($"Word {w} holds allocated blocks but lies after the high-water word {_highWord}.");
            }
        }

        ValidateRunStarts(padding);
        if (_cursor > _highWord || (_wordCount != 0 && _cursor >= _wordCount))
        {
            throw new InvalidOperationException($"The cursor (word {_cursor}) lies after the high-water word ({_highWord}) or the bit set ({_wordCount} words).");
        }
    }

    /// <summary>The run starts' part of <see cref="Validate"/>.</summary>
    private void ValidateRunStarts(ulong padding)
    {
        for (nuint w = 0; w < _wordCount; w++)
        {
            ulong allocated = w == _wordCount - 1 ? _words[w] & ~padding : _words[w];
            if ((_starts[w] & ~allocated) != 0)
            {
                throw new InvalidOperationException($"Word {w} of the run starts marks a free block (or a padding bit).");
            }

            // An allocated block whose predecessor is free begins a run, so it must be marked.
            ulong previous = (_words[w] >> 1) | (w == 0 ? 0 : _words[w - 1] << 63);
            if ((allocated & ~previous & ~_starts[w]) != 0)
            {
                throw new InvalidOperationException($"Word {w} holds an allocated block after a free one that is not marked as a run start.");
            }
        }
    }
}
