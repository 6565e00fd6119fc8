using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace AllocHosting.Allocators;

/// <summary>
/// Bit operations on the 64-bit words of a <see cref="BitSetAllocator"/>'s bit set, and on runs
/// of blocks that span several words.
/// </summary>
/// <remarks>
/// <para>
/// Layout (seed-reference §6.1): word <c>w</c> covers blocks <c>64w … 64w+63</c>, and block
/// <c>64w + j</c> is bit <c>63 − j</c>, so the most significant bit is the lowest-addressed
/// block. A set bit means "allocated". Hence <c>lzcnt(word)</c> is the number of free blocks at
/// the start of the word and <c>tzcnt(word)</c> the number of free blocks at its end.
/// </para>
/// <para>
/// "Top n bits" are the first <c>n</c> blocks of a word, "bottom n bits" its last <c>n</c>
/// blocks. Every mask handles a width of 64: C# masks shift counts to six bits, so the
/// naive <c>(1UL &lt;&lt; 64) − 1</c> is zero — the seed's defect W-BS2.
/// </para>
/// </remarks>
internal static unsafe class BitSetWord
{
    /// <summary>Blocks per word.</summary>
    public const int BlocksPerWord = 64;

    /// <summary>From this many words on, searching for the first non-zero word uses the vectorised span method; for fewer, a plain loop is cheaper than the call.</summary>
    public const int VectorisedWords = 8;

    // Up to this many words, AllWordsAre checks every word rather than stopping at the first difference.
    private const int EarlyExitWords = 32;

    /// <summary>The bits of the first <paramref name="count"/> (0 … 64) blocks of a word: bits <c>[64 − count, 64)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong TopMask(int count)
    {
        Debug.Assert((uint)count <= 64);

        // An arithmetic shift of the sign bit fills exactly `count` top bits, including 64 (W-BS2).
        return count == 0 ? 0 : (ulong)(long.MinValue >> (count - 1));
    }

    /// <summary>The bits of the last <paramref name="count"/> (0 … 64) blocks of a word: bits <c>[0, count)</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong BottomMask(int count)
    {
        Debug.Assert((uint)count <= 64);
        return count == 64 ? ulong.MaxValue : (1UL << count) - 1;
    }

    /// <summary>The bits of blocks <c>[first, first + count)</c> of one word (<c>first + count ≤ 64</c>, <paramref name="count"/> ≥ 1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong BlocksMask(int first, int count)
    {
        Debug.Assert(count >= 1 && (uint)first <= (uint)(64 - count));
        return TopMask(count) >> first;
    }

    /// <summary>
    /// The starts of free runs: bit <c>p</c> of the result is set when the <paramref name="length"/>
    /// (1 … 64) blocks starting at block <c>63 − p</c> are all free in <paramref name="word"/>
    /// and lie inside the word.
    /// </summary>
    /// <remarks>
    /// Folds the free mask onto itself (<c>runs &amp;= runs &lt;&lt; s</c>) doubling the run
    /// length each time, so a length of 64 needs six steps rather than a loop over positions.
    /// Shifting left brings in zeros, which excludes runs that would leave the word.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong FreeRunStarts(ulong word, int length)
    {
        Debug.Assert(length is >= 1 and <= 64);
        if (word == 0)
        {
            // A free word (the common case when a freed block is asked for again) needs no folds.
            return TopMask(65 - length);
        }

        ulong runs = ~word;
        int covered = 1;
        while (covered < length && runs != 0)
        {
            int shift = Math.Min(covered, length - covered);
            runs &= runs << shift;
            covered += shift;
        }

        return runs;
    }

    /// <summary>The bits of the free blocks at the end of <paramref name="word"/> (all bits when the word is free).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong FreeTailMask(ulong word)
    {
        // The bits below the lowest set bit: ~word & (word − 1), one ANDN with BMI1.
        if (Bmi1.X64.IsSupported)
        {
            return Bmi1.X64.AndNot(word, word - 1);
        }

        return ~word & (word - 1);
    }

    /// <summary>
    /// How many blocks at the end of <paramref name="word"/> are free and can start a run: the
    /// free tail shortened so that it starts at a block allowed by <paramref name="allowedStarts"/>
    /// (bit <c>63 − j</c> set when a run may start at block <c>j</c>). Zero when none can.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int AlignedFreeTail(ulong word, ulong allowedStarts)
    {
        ulong starts = FreeTailMask(word) & allowedStarts;
        return 64 - BitOperations.LeadingZeroCount(starts);
    }

    /// <summary>
    /// The allowed-start mask for runs whose first block index must be congruent to
    /// <paramref name="residue"/> modulo <paramref name="step"/> (a power of two ≤ 64): bit
    /// <c>63 − j</c> is set for every such block <c>j</c> of a word.
    /// </summary>
    public static ulong AllowedStarts(int step, int residue)
    {
        Debug.Assert(step is >= 1 and <= 64 && BitOperations.IsPow2(step) && (uint)residue < (uint)step);

        // A bit every `step` positions starting at bit 0, then moved up so that the bits land on
        // positions 63 − j with j ≡ residue (mod step).
        ulong everyStep = step == 64 ? 1UL : ulong.MaxValue / ((1UL << step) - 1);
        return everyStep << (step - 1 - residue);
    }

    /// <summary>Marks blocks <c>[first, first + count)</c> allocated.</summary>
    public static void SetRun(ulong* words, nuint first, nuint count)
    {
        var run = new RunMasks(words, first, count);
        *run.Head |= run.HeadMask;
        FillWords(run.Whole, run.WholeWords, ulong.MaxValue);
        if (run.TailMask != 0)
        {
            *run.Tail |= run.TailMask;
        }
    }

    /// <summary>Marks blocks <c>[first, first + count)</c> free.</summary>
    public static void ClearRun(ulong* words, nuint first, nuint count)
    {
        var run = new RunMasks(words, first, count);
        *run.Head &= ~run.HeadMask;
        FillWords(run.Whole, run.WholeWords, 0);
        if (run.TailMask != 0)
        {
            *run.Tail &= ~run.TailMask;
        }
    }

    /// <summary>
    /// Frees blocks <c>[first, first + count)</c> of <paramref name="words"/> if they are exactly
    /// one live run as far as the run's own words show: every block allocated, and in
    /// <paramref name="starts"/> (the run-start bits, one per block) the first block's bit set and
    /// no other inside the run. Clears the blocks and the first block's start bit and returns true;
    /// otherwise changes nothing and returns false. (Whether the block after the run is another
    /// run's start is the caller's check.)
    /// </summary>
    /// <remarks>
    /// One pass of reads over both bit sets, then the writes: the check of the separate
    /// <see cref="IsRunSet"/> and <see cref="IsRunClear"/> and the clearing of <see cref="ClearRun"/>
    /// in a fraction of their work (one <see cref="RunMasks"/>; a 16 KiB block of 64-byte blocks is
    /// four words of each).
    /// </remarks>
    public static bool TryClearLiveRun(ulong* words, ulong* starts, nuint first, nuint count)
    {
        var run = new RunMasks(words, first, count);
        ulong startBit = 1UL << (63 - (int)(first & 63));
        ulong* headStarts = starts + (first >> 6);
        ulong* wholeStarts = starts + (run.Whole - words);
        if (run.HeadMask != 0
            && ((*run.Head & run.HeadMask) != run.HeadMask || (*headStarts & run.HeadMask) != startBit))
        {
            return false;
        }

        if (run.TailMask != 0
            && ((*run.Tail & run.TailMask) != run.TailMask || (starts[run.Tail - words] & run.TailMask) != 0))
        {
            return false;
        }

        // A run that starts a word has its start bit in the first whole word's starts.
        if (!WholeWordsLive(run.Whole, wholeStarts, run.WholeWords, run.HeadMask == 0 ? startBit : 0))
        {
            return false;
        }

        *run.Head &= ~run.HeadMask;
        FillWords(run.Whole, run.WholeWords, 0);
        if (run.TailMask != 0)
        {
            *run.Tail &= ~run.TailMask;
        }

        *headStarts &= ~startBit;
        return true;
    }

    // Whether each of the count words is all allocated and has no start bit but, in the first word,
    // exactly firstStarts.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool WholeWordsLive(ulong* words, ulong* starts, nuint count, ulong firstStarts)
    {
        if (count == 0)
        {
            return true;
        }

        if (count > EarlyExitWords)
        {
            return words[0] == ulong.MaxValue && starts[0] == firstStarts
                && AllWordsAre(words + 1, count - 1, ulong.MaxValue)
                && AllWordsAre(starts + 1, count - 1, 0);
        }

        // Scalar loads: the allocation that marked the run wrote its start bit (and perhaps its
        // last word) with a scalar store just before, and a vector load over a narrower store
        // that is still in flight cannot take its value from the store buffer (a stall of
        // several cycles, more than the few words of the usual run cost).
        ulong differences = ~words[0] | (starts[0] ^ firstStarts);
        for (nuint i = 1; i < count; i++)
        {
            differences |= ~words[i] | starts[i];
        }

        return differences == 0;
    }

    /// <summary>
    /// Inverts the <paramref name="count"/> words at <paramref name="words"/> if each of them
    /// equals <paramref name="expected"/>, and returns whether it did; otherwise leaves them as
    /// they were.
    /// </summary>
    /// <remarks>
    /// One pass that checks and writes as it goes: on a mismatch the words already written are
    /// known to have held <paramref name="expected"/>, so they are simply put back.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryInvertWords(ulong* words, nuint count, ulong expected)
    {
        nuint i = 0;
        if (Vector256.IsHardwareAccelerated && count >= 4)
        {
            Vector256<ulong> before = Vector256.Create(expected);
            Vector256<ulong> after = ~before;
            for (; i <= count - 4; i += 4)
            {
                if (Vector256.Load(words + i) != before)
                {
                    FillWords(words, i, expected);
                    return false;
                }

                after.Store(words + i);
            }
        }

        for (; i < count; i++)
        {
            if (words[i] != expected)
            {
                FillWords(words, i, expected);
                return false;
            }

            words[i] = ~expected;
        }

        return true;
    }

    /// <summary>Whether every block of <c>[first, first + count)</c> is allocated.</summary>
    public static bool IsRunSet(ulong* words, nuint first, nuint count)
    {
        var run = new RunMasks(words, first, count);
        return (*run.Head & run.HeadMask) == run.HeadMask
            && (run.TailMask == 0 || (*run.Tail & run.TailMask) == run.TailMask)
            && AllWordsAre(run.Whole, run.WholeWords, ulong.MaxValue);
    }

    /// <summary>Whether every block of <c>[first, first + count)</c> is free.</summary>
    public static bool IsRunClear(ulong* words, nuint first, nuint count)
    {
        var run = new RunMasks(words, first, count);
        return (*run.Head & run.HeadMask) == 0
            && (run.TailMask == 0 || (*run.Tail & run.TailMask) == 0)
            && AllWordsAre(run.Whole, run.WholeWords, 0);
    }

    /// <summary>How many of the <paramref name="count"/> words at <paramref name="words"/> are zero before the first that is not (all of them when none is not).</summary>
    public static nuint LeadingZeroWords(ulong* words, nuint count)
    {
        if (count >= VectorisedWords)
        {
            int index = new ReadOnlySpan<ulong>(words, checked((int)count)).IndexOfAnyExcept(0UL);
            return index < 0 ? count : (nuint)index;
        }

        nuint zero = 0;
        while (zero < count && words[zero] == 0)
        {
            zero++;
        }

        return zero;
    }

    /// <summary>Whether each of the <paramref name="count"/> words at <paramref name="words"/> equals <paramref name="value"/>.</summary>
    /// <remarks>
    /// Up to <see cref="EarlyExitWords"/> words, accumulates the differences four words at a
    /// time without a branch, which beats the span method's call for the usual few words; longer
    /// runs use the span method, which stops at the first difference (an aligned scan tests many
    /// long runs that fail early).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool AllWordsAre(ulong* words, nuint count, ulong value)
    {
        if (count > EarlyExitWords)
        {
            return !new ReadOnlySpan<ulong>(words, checked((int)count)).ContainsAnyExcept(value);
        }

        nuint i = 0;
        ulong differences = 0;
        if (Vector256.IsHardwareAccelerated && count >= 4)
        {
            Vector256<ulong> expected = Vector256.Create(value);
            Vector256<ulong> vectorDifferences = Vector256<ulong>.Zero;
            for (; i <= count - 4; i += 4)
            {
                vectorDifferences |= Vector256.Load(words + i) ^ expected;
            }

            if (vectorDifferences != Vector256<ulong>.Zero)
            {
                return false;
            }
        }

        for (; i < count; i++)
        {
            differences |= words[i] ^ value;
        }

        return differences == 0;
    }

    /// <summary>Sets each of the <paramref name="count"/> words at <paramref name="words"/> to <paramref name="value"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void FillWords(ulong* words, nuint count, ulong value)
    {
        nuint i = 0;
        if (Vector256.IsHardwareAccelerated && count >= 4)
        {
            Vector256<ulong> filled = Vector256.Create(value);
            for (; i <= count - 4; i += 4)
            {
                filled.Store(words + i);
            }
        }

        for (; i < count; i++)
        {
            words[i] = value;
        }
    }

    /// <summary>
    /// A run cut at word boundaries: its bits in a partly covered first word (<see cref="Head"/>,
    /// an empty mask when the run starts a word), the words it covers entirely, and its bits in a
    /// partly covered last word (<see cref="Tail"/>, only when <see cref="TailMask"/> is not
    /// zero, so nothing past the run is ever read).
    /// </summary>
    private readonly ref struct RunMasks
    {
        public readonly ulong* Head;
        public readonly ulong HeadMask;
        public readonly ulong* Whole;
        public readonly nuint WholeWords;
        public readonly ulong* Tail;
        public readonly ulong TailMask;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public RunMasks(ulong* words, nuint first, nuint count)
        {
            Debug.Assert(count >= 1);
            Head = words + (first >> 6);
            int offset = (int)(first & 63);
            nuint room = (nuint)(64 - offset);
            if (count < room)
            {
                HeadMask = BlocksMask(offset, (int)count);
                Whole = Head;
                WholeWords = 0;
                Tail = Head;
                TailMask = 0;
                return;
            }

            // A run that starts a word leaves the head empty, so that a word-aligned run is whole
            // words only (a 16 KiB block of 64-byte blocks: one vector of four words).
            HeadMask = offset == 0 ? 0 : BottomMask((int)room);
            nuint rest = offset == 0 ? count : count - room;
            Whole = offset == 0 ? Head : Head + 1;
            WholeWords = rest >> 6;
            Tail = Whole + WholeWords;
            TailMask = TopMask((int)(rest & 63));
        }
    }
}
