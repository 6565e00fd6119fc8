using static AllocHosting.Allocators.NumaHeapBlock;

namespace AllocHosting.Allocators;

// The invariant check of a heap (tests and diagnostics): every block of every segment walked.
//
// Threading: takes the heap's lock.
internal sealed unsafe partial class NumaHeap
{
    /// <summary>Checks every invariant of the remarks; returns what is wrong, or null.</summary>
    public string? Validate()
    {
        _hot.Lock.Enter();
        try
        {
            return ValidateLocked();
        }
        finally
        {
            _hot.Lock.Exit();
        }
    }

    private string? ValidateLocked()
    {
        long listed = 0;
        for (int c = 0; c < ClassCount; c++)
        {
            nuint previous = 0;
            for (nuint block = _heads[c]; block != 0; previous = block, block = Next(block))
            {
                if (block == previous || Previous(block) != previous || ClassOf(SizeOf(block)) != c || IsInUse(block))
                {
                    return $"list {c} is broken at 0x{block:X}";
                }

                listed++;
            }

            if (_tails[c] != previous || ((_nonEmpty[c >> 6] >> c) & 1) != (previous != 0 ? 1UL : 0))
            {
                return $"list {c} has a wrong tail or non-empty bit";
            }
        }

        long free = 0;
        foreach ((nuint start, _, _) in _segments)
        {
            nuint end = start + _segmentSize - HeaderSize;
            bool previousInUse = true;
            nuint block = start + FirstBlockOffset;
            for (; block < end; block += SizeOf(block))
            {
                nuint size = SizeOf(block);
                bool flag = (Tag(block) & PreviousInUse) != 0;
                if (size < MinimumBlockSize || flag != previousInUse)
                {
                    return $"block 0x{block:X} of {size} bytes has a wrong size or previous-in-use flag";
                }

                if (!IsInUse(block))
                {
                    if (!previousInUse || Footer(block, size) != size || Stamp(block) != 0)
                    {
                        return $"free block 0x{block:X} is next to a free block or has a wrong footer";
                    }

                    free++;
                }

                previousInUse = IsInUse(block);
            }

            if (block != end || ((Tag(end) & PreviousInUse) != 0) != previousInUse)
            {
                return $"the segment at 0x{start:X} is not tiled up to its end tag";
            }
        }

        return free != listed || listed != _hot.FreeBlockCount ? $"{free} free blocks, {listed} listed, {_hot.FreeBlockCount} counted" : null;
    }
}
