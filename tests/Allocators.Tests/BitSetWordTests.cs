using System.Numerics;
using CsCheck;

namespace AllocHosting.Allocators.Tests;

public unsafe class BitSetWordTests
{
    [Theory]
    [InlineData(0, 0x0000_0000_0000_0000UL)]
    [InlineData(1, 0x8000_0000_0000_0000UL)]
    [InlineData(4, 0xF000_0000_0000_0000UL)]
    [InlineData(63, 0xFFFF_FFFF_FFFF_FFFEUL)]
    [InlineData(64, 0xFFFF_FFFF_FFFF_FFFFUL)]
    public void Top_mask_covers_the_first_blocks_of_a_word(int count, ulong expected) =>
        Assert.Equal(expected, BitSetWord.TopMask(count));

    [Theory]
    [InlineData(0, 0x0000_0000_0000_0000UL)]
    [InlineData(1, 0x0000_0000_0000_0001UL)]
    [InlineData(4, 0x0000_0000_0000_000FUL)]
    [InlineData(63, 0x7FFF_FFFF_FFFF_FFFFUL)]
    [InlineData(64, 0xFFFF_FFFF_FFFF_FFFFUL)]
    public void Bottom_mask_covers_the_last_blocks_of_a_word(int count, ulong expected) =>
        Assert.Equal(expected, BitSetWord.BottomMask(count));

    [Fact]
    public void W_BS2_set_run_of_64_blocks_sets_the_whole_word()
    {
        Assert.Equal(ulong.MaxValue, BitSetWord.BlocksMask(0, 64));
        ulong word = 0;
        BitSetWord.SetRun(&word, 0, 64);
        Assert.Equal(ulong.MaxValue, word);
        BitSetWord.ClearRun(&word, 0, 64);
        Assert.Equal(0UL, word);

        // A run that starts mid-word and ends exactly at the word's end (a head of 64 − 1 bits, no tail).
        BitSetWord.SetRun(&word, 1, 63);
        Assert.Equal(ulong.MaxValue >> 1, word);
        BitSetWord.ClearRun(&word, 1, 63);
        Assert.Equal(0UL, word);

        // Two whole words.
        ulong* words = stackalloc ulong[2];
        words[0] = 0;
        words[1] = 0;
        BitSetWord.SetRun(words, 0, 128);
        Assert.Equal(ulong.MaxValue, words[0]);
        Assert.Equal(ulong.MaxValue, words[1]);
        BitSetWord.ClearRun(words, 0, 128);
        Assert.Equal(0UL, words[0]);
        Assert.Equal(0UL, words[1]);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(7)]
    [InlineData(33)]
    [InlineData(63)]
    public void Set_and_clear_run_at_either_end_of_a_word_change_exactly_n_bits(int count)
    {
        ulong word = 0;
        BitSetWord.SetRun(&word, 0, (nuint)count);
        Assert.Equal(count, BitOperations.PopCount(word));
        Assert.Equal(0, BitOperations.LeadingZeroCount(word));
        BitSetWord.ClearRun(&word, 0, (nuint)count);
        Assert.Equal(0UL, word);

        word = ulong.MaxValue;
        BitSetWord.ClearRun(&word, (nuint)(64 - count), (nuint)count);
        Assert.Equal(64 - count, BitOperations.PopCount(word));
        Assert.Equal(count, BitOperations.TrailingZeroCount(word));
        BitSetWord.SetRun(&word, (nuint)(64 - count), (nuint)count);
        Assert.Equal(ulong.MaxValue, word);
    }

    [Theory]
    [InlineData(10, 3, 0b111UL << 7)]
    [InlineData(64, 1, 1UL << 63)]
    [InlineData(1, 1, 1UL)]
    [InlineData(40, 40, (1UL << 40) - 1)]
    public void Blocks_mask_inside_a_word_is_n_bits_ending_below_the_given_bit(int below, int count, ulong expected)
    {
        // Bits [below − count, below) are blocks [64 − below, 64 − below + count).
        Assert.Equal(expected, BitSetWord.BlocksMask(64 - below, count));
        ulong word = 0;
        BitSetWord.SetRun(&word, (nuint)(64 - below), (nuint)count);
        Assert.Equal(expected, word);
    }

    [Fact]
    public void W_BS1_clear_run_clears_every_bit_of_the_run_not_only_the_first()
    {
        // Blocks 44 … 48 are bits 19 … 15.
        ulong word = ulong.MaxValue;
        BitSetWord.ClearRun(&word, 44, 5);
        Assert.Equal(~(0b11111UL << 15), word);
    }

    [Theory]
    [InlineData(0, 1, 1UL << 63)]
    [InlineData(0, 64, ulong.MaxValue)]
    [InlineData(63, 1, 1UL)]
    [InlineData(3, 2, 0b11UL << 59)]
    [InlineData(60, 4, 0b1111UL)]
    public void Blocks_mask_maps_block_j_to_bit_63_minus_j(int first, int count, ulong expected) =>
        Assert.Equal(expected, BitSetWord.BlocksMask(first, count));

    [Fact]
    public void Free_run_starts_agree_with_a_loop_over_positions()
    {
        // Reference model: for every start block, test the run block by block.
        Gen.Select(Gen.ULong, Gen.ULong, Gen.Int[1, 64]).Sample((a, b, length) =>
        {
            ulong word = a & b; // more free blocks than a uniform word, so long runs occur
            ulong expected = 0;
            for (int first = 0; first + length <= 64; first++)
            {
                bool free = true;
                for (int k = 0; k < length; k++)
                {
                    free &= (word & (1UL << (63 - first - k))) == 0;
                }

                if (free)
                {
                    expected |= 1UL << (63 - first);
                }
            }

            Assert.Equal(expected, BitSetWord.FreeRunStarts(word, length));
        }, iter: 3000);
    }

    [Fact]
    public void Free_run_starts_of_an_empty_word_for_64_blocks_is_block_zero_only()
    {
        Assert.Equal(1UL << 63, BitSetWord.FreeRunStarts(0, 64));
        Assert.Equal(0UL, BitSetWord.FreeRunStarts(1, 64));
        Assert.Equal(ulong.MaxValue, BitSetWord.FreeRunStarts(0, 1));
    }

    [Theory]
    [InlineData(0UL, ulong.MaxValue)]
    [InlineData(1UL, 0UL)]
    [InlineData(0b1000UL, 0b0111UL)]
    [InlineData(1UL << 63, ~(1UL << 63))]
    public void Free_tail_mask_is_the_bits_below_the_lowest_allocated_block(ulong word, ulong expected) =>
        Assert.Equal(expected, BitSetWord.FreeTailMask(word));

    [Theory]
    [InlineData(1, 0, ulong.MaxValue)]
    [InlineData(2, 0, 0xAAAA_AAAA_AAAA_AAAAUL)]
    [InlineData(2, 1, 0x5555_5555_5555_5555UL)]
    [InlineData(8, 0, 0x8080_8080_8080_8080UL)]
    [InlineData(8, 3, 0x1010_1010_1010_1010UL)]
    [InlineData(64, 0, 1UL << 63)]
    [InlineData(64, 63, 1UL)]
    public void Allowed_starts_mark_blocks_congruent_to_the_residue(int step, int residue, ulong expected) =>
        Assert.Equal(expected, BitSetWord.AllowedStarts(step, residue));

    [Fact]
    public void Aligned_free_tail_starts_at_an_allowed_block()
    {
        // Word with blocks 0..49 allocated, 50..63 free (14 free blocks).
        ulong word = BitSetWord.TopMask(50);
        Assert.Equal(14, BitSetWord.AlignedFreeTail(word, ulong.MaxValue));
        Assert.Equal(8, BitSetWord.AlignedFreeTail(word, BitSetWord.AllowedStarts(8, 0))); // from block 56
        Assert.Equal(0, BitSetWord.AlignedFreeTail(word, BitSetWord.AllowedStarts(64, 0)));
        Assert.Equal(64, BitSetWord.AlignedFreeTail(0, BitSetWord.AllowedStarts(64, 0)));
        Assert.Equal(0, BitSetWord.AlignedFreeTail(1, ulong.MaxValue));
    }

    [Theory]
    [InlineData(0u, 1u)]
    [InlineData(5u, 3u)]
    [InlineData(60u, 10u)]
    [InlineData(64u, 64u)]
    [InlineData(10u, 140u)]
    [InlineData(63u, 129u)]
    [InlineData(5u, 600u)]
    [InlineData(0u, 640u)]
    [InlineData(64u, 576u)]
    public void Run_operations_touch_exactly_the_run_across_words(uint first, uint count)
    {
        const int WordCount = 12;
        ulong* words = stackalloc ulong[WordCount];
        new Span<ulong>(words, WordCount).Clear();
        Assert.True(BitSetWord.IsRunClear(words, first, count));
        BitSetWord.SetRun(words, first, count);
        Assert.True(BitSetWord.IsRunSet(words, first, count));
        for (uint block = 0; block < WordCount * 64; block++)
        {
            bool set = (words[block >> 6] & (1UL << (63 - (int)(block & 63)))) != 0;
            Assert.Equal(block >= first && block < first + count, set);
        }

        if (first > 0)
        {
            Assert.False(BitSetWord.IsRunSet(words, first - 1, count));
        }

        Assert.False(BitSetWord.IsRunClear(words, first + count - 1, 2));
        BitSetWord.ClearRun(words, first, count);
        Assert.True(new Span<ulong>(words, WordCount).IndexOfAnyExcept(0UL) < 0);
    }

    [Theory]
    [InlineData(3u, 700u, 300u)]
    [InlineData(3u, 700u, 650u)]
    [InlineData(0u, 200u, 100u)]
    public void Run_tests_see_one_odd_block_anywhere_in_a_long_run(uint first, uint count, uint odd)
    {
        const int WordCount = 12;
        ulong* words = stackalloc ulong[WordCount];
        new Span<ulong>(words, WordCount).Clear();
        BitSetWord.SetRun(words, first, count);
        words[odd >> 6] &= ~(1UL << (63 - (int)(odd & 63)));
        Assert.False(BitSetWord.IsRunSet(words, first, count));
        Assert.True(BitSetWord.IsRunSet(words, first, odd - first));

        new Span<ulong>(words, WordCount).Clear();
        words[odd >> 6] |= 1UL << (63 - (int)(odd & 63));
        Assert.False(BitSetWord.IsRunClear(words, first, count));
        Assert.True(BitSetWord.IsRunClear(words, odd + 1, first + count - odd - 1));
    }

    [Theory]
    [InlineData(0u, 1u)]
    [InlineData(5u, 3u)]
    [InlineData(60u, 10u)]
    [InlineData(0u, 64u)]
    [InlineData(64u, 64u)]
    [InlineData(5u, 59u)]
    [InlineData(0u, 256u)]
    [InlineData(64u, 300u)]
    [InlineData(10u, 140u)]
    [InlineData(63u, 129u)]
    [InlineData(5u, 600u)]
    [InlineData(0u, 640u)]
    [InlineData(0u, 704u)]
    public void Try_clear_live_run_frees_exactly_the_run_and_its_start(uint first, uint count)
    {
        const int WordCount = 12;
        ulong* words = stackalloc ulong[WordCount];
        ulong* starts = stackalloc ulong[WordCount];
        new Span<ulong>(words, WordCount).Fill(ulong.MaxValue);
        new Span<ulong>(starts, WordCount).Clear();
        MarkStart(starts, first);
        // Neighbouring runs' starts, outside the run, stay.
        if (first > 0)
        {
            MarkStart(starts, first - 1);
        }

        if (first + count < WordCount * 64)
        {
            MarkStart(starts, first + count);
        }

        Assert.True(BitSetWord.TryClearLiveRun(words, starts, first, count));
        for (uint block = 0; block < WordCount * 64; block++)
        {
            Assert.Equal(block < first || block >= first + count, IsSet(words, block));
            Assert.Equal(block == first - 1 || block == first + count, IsSet(starts, block));
        }
    }

    [Theory]
    [InlineData(0u, 256u, 0u)]
    [InlineData(0u, 256u, 255u)]
    [InlineData(0u, 640u, 300u)] // second group of four words
    [InlineData(0u, 640u, 600u)] // a word after the groups
    [InlineData(0u, 2304u, 2000u)] // past the early-exit length: the span path
    [InlineData(3u, 700u, 3u)] // partial first word
    [InlineData(3u, 700u, 702u)] // partial last word
    [InlineData(3u, 700u, 500u)]
    [InlineData(5u, 3u, 6u)] // one word
    public void Try_clear_live_run_with_one_free_block_changes_nothing(uint first, uint count, uint free)
    {
        AssertRefusedUnchanged(first, count, (words, _) => words[free >> 6] &= ~Bit(free));
    }

    [Theory]
    [InlineData(0u, 256u, 1u)]
    [InlineData(0u, 256u, 64u)]
    [InlineData(0u, 256u, 255u)]
    [InlineData(0u, 640u, 600u)]
    [InlineData(0u, 2304u, 2000u)]
    [InlineData(3u, 700u, 4u)] // partial first word
    [InlineData(3u, 700u, 702u)] // partial last word
    [InlineData(5u, 3u, 7u)] // one word
    public void Try_clear_live_run_with_another_start_inside_changes_nothing(uint first, uint count, uint inner)
    {
        AssertRefusedUnchanged(first, count, (_, starts) => starts[inner >> 6] |= Bit(inner));
    }

    [Theory]
    [InlineData(0u, 256u)]
    [InlineData(3u, 700u)]
    [InlineData(64u, 64u)]
    [InlineData(5u, 3u)]
    public void Try_clear_live_run_without_its_start_changes_nothing(uint first, uint count)
    {
        AssertRefusedUnchanged(first, count, (_, starts) => starts[first >> 6] &= ~Bit(first));
    }

    private delegate void BitSetsChange(ulong* words, ulong* starts);

    // A fully allocated region with one live run [first, first + count), spoiled by change: the
    // free is refused and neither bit set changes.
    private static void AssertRefusedUnchanged(uint first, uint count, BitSetsChange change)
    {
        const int WordCount = 40;
        ulong* words = stackalloc ulong[WordCount];
        ulong* starts = stackalloc ulong[WordCount];
        var wordSpan = new Span<ulong>(words, WordCount);
        var startSpan = new Span<ulong>(starts, WordCount);
        wordSpan.Fill(ulong.MaxValue);
        startSpan.Clear();
        MarkStart(starts, first);
        change(words, starts);
        ulong[] wordsBefore = wordSpan.ToArray();
        ulong[] startsBefore = startSpan.ToArray();
        Assert.False(BitSetWord.TryClearLiveRun(words, starts, first, count));
        Assert.Equal(wordsBefore, wordSpan.ToArray());
        Assert.Equal(startsBefore, startSpan.ToArray());
    }

    private static ulong Bit(uint block) => 1UL << (63 - (int)(block & 63));

    private static void MarkStart(ulong* starts, uint block) => starts[block >> 6] |= Bit(block);

    private static bool IsSet(ulong* bits, uint block) => (bits[block >> 6] & Bit(block)) != 0;

    [Theory]
    [InlineData(0, -1)]
    [InlineData(3, -1)]
    [InlineData(4, -1)]
    [InlineData(11, -1)]
    [InlineData(11, 0)]
    [InlineData(11, 5)]
    [InlineData(11, 9)]
    [InlineData(3, 2)]
    public void Try_invert_words_inverts_all_or_none(int count, int mismatch)
    {
        ulong* words = stackalloc ulong[12];
        var span = new Span<ulong>(words, 12);
        foreach (ulong expected in new[] { 0UL, ulong.MaxValue })
        {
            span.Fill(expected);
            words[11] = 0x1234; // just past the words: never touched
            if (mismatch >= 0)
            {
                words[mismatch] ^= 1UL << 17;
            }

            ulong[] before = span.ToArray();
            bool inverted = BitSetWord.TryInvertWords(words, (nuint)count, expected);
            Assert.Equal(mismatch < 0, inverted);
            for (int i = 0; i < 12; i++)
            {
                ulong wanted = inverted && i < count ? ~before[i] : before[i];
                Assert.Equal(wanted, words[i]);
            }

            Assert.Equal(mismatch < 0, BitSetWord.AllWordsAre(words, (nuint)count, inverted ? ~expected : expected));
        }
    }

    [Theory]
    [InlineData(0, -1, 0)]
    [InlineData(5, -1, 5)]
    [InlineData(5, 2, 2)]
    [InlineData(20, -1, 20)]
    [InlineData(20, 0, 0)]
    [InlineData(20, 13, 13)]
    [InlineData(20, 19, 19)]
    public void Leading_zero_words_stop_at_the_first_non_zero_word(int count, int nonZero, int expected)
    {
        ulong* words = stackalloc ulong[24];
        new Span<ulong>(words, 24).Clear();
        words[count] = 1; // just past the words
        if (nonZero >= 0)
        {
            words[nonZero] = 1UL << 40;
        }

        Assert.Equal((nuint)expected, BitSetWord.LeadingZeroWords(words, (nuint)count));
    }

    [Theory]
    [InlineData(0, -1)]
    [InlineData(3, 2)]
    [InlineData(7, 6)]
    [InlineData(32, -1)]
    [InlineData(32, 31)]
    [InlineData(33, -1)]
    [InlineData(33, 32)]
    [InlineData(100, -1)]
    [InlineData(100, 57)]
    public void All_words_are_sees_one_different_word_anywhere(int count, int different)
    {
        ulong* words = stackalloc ulong[101];
        var span = new Span<ulong>(words, 101);
        foreach (ulong value in new[] { 0UL, ulong.MaxValue })
        {
            span.Fill(value);
            words[count] = ~value; // just past the words
            if (different >= 0)
            {
                words[different] ^= 1UL << 63;
            }

            Assert.Equal(different < 0, BitSetWord.AllWordsAre(words, (nuint)count, value));
        }
    }
}
