using System.Numerics;

namespace AllocHosting.Allocators;

/// <summary>
/// The next-fit search of a <see cref="BitSetAllocator"/>'s bit set for a run of free blocks:
/// from the cursor word to the end, then wrapping around to the start; the lowest-addressed fit in
/// each scanned word wins, and runs may cross word boundaries. It only reads the bit set.
/// </summary>
/// <remarks>
/// Block <c>64w + j</c> is bit <c>63 − j</c> of word <c>w</c>, a set bit an allocated block (see
/// <see cref="BitSetWord"/>). Alignments up to 64 blocks are expressed as a mask of allowed starts
/// per word; wider ones are served by trying every aligned start.
/// </remarks>
internal static unsafe class FreeRunSearch
{
    /// <summary>The answer when no run fits.</summary>
    public static readonly nuint NotFound = nuint.MaxValue;

    /// <summary>
    /// The first block of a free run of <paramref name="count"/> blocks starting at an allowed
    /// position (<paramref name="allowedStarts"/>, see <see cref="BitSetWord.AllowedStarts"/>):
    /// from word <paramref name="cursor"/> to the end, then from the start past the cursor (so
    /// runs straddling the cursor word are found); or <see cref="NotFound"/>.
    /// </summary>
    public static nuint NextFit(ulong* words, nuint wordCount, nuint cursor, nuint count, ulong allowedStarts)
    {
        nuint first = Scan(words, cursor, wordCount, count, allowedStarts);
        if (first == NotFound && cursor != 0)
        {
            // The first pass found every run starting at or after the cursor word, so the wrap
            // pass only needs runs starting before it; those end at most count/64 + 1 words later.
            nuint end = Math.Min(wordCount, cursor + (count >> 6) + 2);
            first = Scan(words, 0, end, count, allowedStarts);
        }

        return first;
    }

    /// <summary>
    /// Alignments above 64 blocks: the first block of a free run of <paramref name="count"/>
    /// blocks whose address (<paramref name="blocks"/> + block × 2^<paramref name="blockShift"/>)
    /// is aligned to <paramref name="alignment"/>, trying every aligned start from the cursor
    /// word on, then from the beginning; or <see cref="NotFound"/>.
    /// </summary>
    public static nuint NextFitWidelyAligned(ulong* words, nuint blockCount, nuint blocks, int blockShift, nuint cursor, nuint count, nuint alignment)
    {
        nuint cursorBlock = cursor << 6;
        nuint first = ScanAligned(words, blockCount, blocks, blockShift, cursorBlock, blockCount, count, alignment);
        return first != NotFound || cursorBlock == 0
            ? first
            : ScanAligned(words, blockCount, blocks, blockShift, 0, cursorBlock, count, alignment);
    }

    // The first block of the lowest-addressed fitting run starting in words [from, to), or NotFound.
    private static nuint Scan(ulong* words, nuint from, nuint to, nuint count, ulong allowedStarts)
    {
        // Free blocks at the end of the previous word(s), starting at an allowed block.
        nuint carried = 0;
        for (nuint w = from; w < to; w++)
        {
            if (carried != 0)
            {
                // Free words that cannot complete the run only lengthen it: cross a long stretch
                // of them in one vectorised search rather than word by word.
                nuint lengthening = Math.Min((count - carried - 1) >> 6, to - w);
                if (lengthening >= BitSetWord.VectorisedWords)
                {
                    nuint free = BitSetWord.LeadingZeroWords(words + w, lengthening);
                    carried += free << 6;
                    w += free;
                    if (w == to)
                    {
                        break;
                    }
                }
            }

            ulong word = words[w];
            nuint leading = (nuint)BitOperations.LeadingZeroCount(word);
            if (carried != 0 && carried + leading >= count)
            {
                return (w << 6) - carried;
            }

            if (count <= 64)
            {
                ulong starts = BitSetWord.FreeRunStarts(word, (int)count) & allowedStarts;
                if (starts != 0)
                {
                    return (w << 6) + (nuint)BitOperations.LeadingZeroCount(starts);
                }
            }

            carried = word == 0 && carried != 0
                ? carried + 64
                : (nuint)BitSetWord.AlignedFreeTail(word, allowedStarts);
        }

        return NotFound;
    }

    // Every aligned start among blocks [from, to), lowest first.
    private static nuint ScanAligned(ulong* words, nuint blockCount, nuint blocks, int blockShift, nuint from, nuint to, nuint count, nuint alignment)
    {
        nuint start = Allocator.AlignUp(blocks + (from << blockShift), alignment);
        if (start < blocks)
        {
            return NotFound;
        }

        nuint step = alignment >> blockShift;
        for (nuint first = (start - blocks) >> blockShift; first < to && count <= blockCount - first; first += step)
        {
            if (BitSetWord.IsRunClear(words, first, count))
            {
                return first;
            }
        }

        return NotFound;
    }
}
