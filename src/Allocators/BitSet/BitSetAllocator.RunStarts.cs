using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

// Run starts: a second bit set, stored after the first, with one bit per block set on the first
// block of every live run (issue 11, point 3). With it a free or resize can tell a live block's
// first block from a later one, and its length from a longer or shorter one.
public sealed unsafe partial class BitSetAllocator
{
    /// <summary>Marks block <paramref name="block"/> as the first block of a live run.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void MarkRunStart(nuint block) => _starts[block >> 6] |= 1UL << (63 - (int)(block & 63));

    /// <summary>Clears the run-start mark of block <paramref name="block"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ClearRunStart(nuint block) => _starts[block >> 6] &= ~(1UL << (63 - (int)(block & 63)));

    /// <summary>Whether block <paramref name="block"/> is the first block of a live run.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool IsRunStart(nuint block) => (_starts[block >> 6] & (1UL << (63 - (int)(block & 63)))) != 0;

    /// <summary>
    /// Whether blocks <c>[first, first + count)</c> are exactly one live run: <paramref name="first"/>
    /// is a run start, every block is allocated, no other run starts inside, and the block after
    /// is free, past the end or another run's start. O(count / 64) word operations.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool IsLiveRun(nuint first, nuint count)
    {
        int offset = (int)(first & 63);
        if (count <= (nuint)(64 - offset))
        {
            // One word (the common case): its blocks all allocated, and of its run starts only the first.
            nuint w = first >> 6;
            ulong run = BitSetWord.BlocksMask(offset, (int)count);
            if ((_words[w] & run) != run || (_starts[w] & run) != 1UL << (63 - offset))
            {
                return false;
            }
        }
        else if (!IsRunStart(first)
            || !BitSetWord.IsRunClear(_starts, first + 1, count - 1)
            || !BitSetWord.IsRunSet(_words, first, count))
        {
            return false;
        }

        return EndsRun(first + count);
    }

    /// <summary>Whether a live run may end before block <paramref name="next"/>: it is past the end, free, or another run's start.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool EndsRun(nuint next) =>
        next >= _blockCount
        || (_words[next >> 6] & (1UL << (63 - (int)(next & 63)))) == 0
        || IsRunStart(next);

    /// <summary>The block index of <paramref name="pointer"/>; throws unless it is a block start inside the region.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nuint BlockOf(byte* pointer)
    {
        nuint offset = (nuint)(pointer - _blocks);
        if (offset >= (_blockCount << _blockShift) || (offset & (_blockSize - 1)) != 0)
        {
            ThrowInvalidPointer(pointer);
        }

        return offset >> _blockShift;
    }

    /// <summary>
    /// Checks that a block of <paramref name="size"/> bytes at <paramref name="pointer"/> is one
    /// live run (see <see cref="IsLiveRun"/>); returns its first block and block count.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nuint ValidateLiveRun(byte* pointer, nuint size, out nuint count)
    {
        nuint first = BlockOf(pointer);
        count = (size + _blockSize - 1) >> _blockShift;
        if (count > _blockCount - first)
        {
            ThrowInvalidPointer(pointer);
        }

        if (!IsLiveRun(first, count))
        {
            ThrowNotLiveRun(pointer, first, count);
        }

        return first;
    }

    /// <summary>
    /// The last resort of a grow: frees the block's own blocks for a moment so that a run
    /// overlapping them can be found, and puts them back when none fits.
    /// </summary>
    private byte* GrowOverOwnBlocks(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint first = BlockOf(pointer);
        nuint currentCount = (currentSize + _blockSize - 1) >> _blockShift;
        nuint newCount = (newSize + _blockSize - 1) >> _blockShift;
        BitSetWord.ClearRun(_words, first, currentCount);
        _freeBlocks += currentCount;
        nuint found = FindFree(newCount, alignment);
        if (found == FreeRunSearch.NotFound)
        {
            BitSetWord.SetRun(_words, first, currentCount);
            _freeBlocks -= currentCount;
            return null;
        }

        ClearRunStart(first);
        _counters.Freed(currentCount << _blockShift);
        byte* moved = Take(found, newCount, newSize);

        // The runs may overlap; Buffer.MemoryCopy handles that like memmove.
        Buffer.MemoryCopy(pointer, moved, newCount << _blockShift, currentSize);
        return moved;
    }

    /// <summary>
    /// Throws for a free or resize that does not name one live run: a double free when its first
    /// block is free, otherwise a pointer inside a live run or a size of another block count.
    /// </summary>
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotLiveRun(byte* pointer, nuint first, nuint count)
    {
        if ((_words[first >> 6] & (1UL << (63 - (int)(first & 63)))) == 0)
        {
            ThrowAlreadyFree(pointer);
        }

        throw new ArgumentException(
            $"{Name}: 0x{(nuint)pointer:X} with a size of {count} blocks is not a live block: either the pointer lies inside a live block, or the size is not the one the block was allocated with (a size is the same block's only when it rounds to the same number of {_blockSize}-byte blocks).",
            nameof(pointer));
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowAlreadyFree(byte* pointer) => Allocator.ThrowDoubleFree(Name, pointer);

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowInvalidPointer(byte* pointer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Allocator.ThrowNotOwned(Name, pointer);
    }
}
