using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
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

    // From this many whole words on, run operations use vectorised span methods.
    private const int VectorisedWords = 8;

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

    /// <summary>The bits <c>[below − count, below)</c>: <paramref name="count"/> bits ending just under bit <paramref name="below"/> (the seed's "middle bits").</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MiddleMask(int below, int count)
    {
        Debug.Assert((uint)below <= 64 && (uint)count <= (uint)below);
        return BottomMask(count) << (below - count);
    }

    /// <summary>The bits of blocks <c>[first, first + count)</c> of one word (<c>first + count ≤ 64</c>, <paramref name="count"/> ≥ 1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong BlocksMask(int first, int count)
    {
        Debug.Assert(count >= 1 && (uint)first <= (uint)(64 - count));
        return TopMask(count) >> first;
    }

    /// <summary>Marks the first <paramref name="count"/> blocks of <paramref name="word"/> allocated.</summary>
    public static void SetTop(ref ulong word, int count) => word |= TopMask(count);

    /// <summary>Marks the first <paramref name="count"/> blocks of <paramref name="word"/> free.</summary>
    public static void ClearTop(ref ulong word, int count) => word &= ~TopMask(count);

    /// <summary>Marks the last <paramref name="count"/> blocks of <paramref name="word"/> allocated.</summary>
    public static void SetBottom(ref ulong word, int count) => word |= BottomMask(count);

    /// <summary>Marks the last <paramref name="count"/> blocks of <paramref name="word"/> free.</summary>
    public static void ClearBottom(ref ulong word, int count) => word &= ~BottomMask(count);

    /// <summary>Sets bits <c>[below − count, below)</c> of <paramref name="word"/>.</summary>
    public static void SetMiddle(ref ulong word, int below, int count) => word |= MiddleMask(below, count);

    /// <summary>Clears bits <c>[below − count, below)</c> of <paramref name="word"/> — all of them (the seed cleared one, W-BS1).</summary>
    public static void ClearMiddle(ref ulong word, int below, int count) => word &= ~MiddleMask(below, count);

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
    public static void SetRun(ulong* words, nuint first, nuint count) => Walk<SetOperation>(words, first, count);

    /// <summary>Marks blocks <c>[first, first + count)</c> free.</summary>
    public static void ClearRun(ulong* words, nuint first, nuint count) => Walk<ClearOperation>(words, first, count);

    /// <summary>Whether every block of <c>[first, first + count)</c> is allocated.</summary>
    public static bool IsRunSet(ulong* words, nuint first, nuint count) => Walk<AllSetTest>(words, first, count);

    /// <summary>Whether every block of <c>[first, first + count)</c> is free.</summary>
    public static bool IsRunClear(ulong* words, nuint first, nuint count) => Walk<AllClearTest>(words, first, count);

    /// <summary>Applies <typeparamref name="TOperation"/> to the masks of a run word by word; stops at the first <see langword="false"/>.</summary>
    private static bool Walk<TOperation>(ulong* words, nuint first, nuint count)
        where TOperation : struct, IWordOperation
    {
        Debug.Assert(count >= 1);
        ulong* word = words + (first >> 6);
        int offset = (int)(first & 63);
        nuint room = (nuint)(64 - offset);
        if (count <= room)
        {
            return TOperation.Apply(ref *word, BlocksMask(offset, (int)count));
        }

        if (!TOperation.Apply(ref *word, BottomMask((int)room)))
        {
            return false;
        }

        count -= room;
        word++;
        nuint wholeWords = count >> 6;
        if (wholeWords >= VectorisedWords)
        {
            // Long runs (a 16 KiB block of 16-byte blocks is 16 words) use the vectorised span
            // operations; for a few words the plain loop is cheaper than the call.
            if (!TOperation.ApplyWhole(new Span<ulong>(word, (int)wholeWords)))
            {
                return false;
            }

            word += wholeWords;
            count &= 63;
        }

        while (count >= 64)
        {
            if (!TOperation.Apply(ref *word, ulong.MaxValue))
            {
                return false;
            }

            count -= 64;
            word++;
        }

        return count == 0 || TOperation.Apply(ref *word, TopMask((int)count));
    }

    private interface IWordOperation
    {
        static abstract bool Apply(ref ulong word, ulong mask);

        static abstract bool ApplyWhole(Span<ulong> words);
    }

    private readonly struct SetOperation : IWordOperation
    {
        public static bool Apply(ref ulong word, ulong mask)
        {
            word |= mask;
            return true;
        }

        public static bool ApplyWhole(Span<ulong> words)
        {
            words.Fill(ulong.MaxValue);
            return true;
        }
    }

    private readonly struct ClearOperation : IWordOperation
    {
        public static bool Apply(ref ulong word, ulong mask)
        {
            word &= ~mask;
            return true;
        }

        public static bool ApplyWhole(Span<ulong> words)
        {
            words.Clear();
            return true;
        }
    }

    private readonly struct AllSetTest : IWordOperation
    {
        public static bool Apply(ref ulong word, ulong mask) => (word & mask) == mask;

        public static bool ApplyWhole(Span<ulong> words) => !words.ContainsAnyExcept(ulong.MaxValue);
    }

    private readonly struct AllClearTest : IWordOperation
    {
        public static bool Apply(ref ulong word, ulong mask) => (word & mask) == 0;

        public static bool ApplyWhole(Span<ulong> words) => !words.ContainsAnyExcept(0UL);
    }
}
