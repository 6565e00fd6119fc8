using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;
using CsCheck;
using static AllocHosting.Allocators.Tests.BitSetAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Random operation sequences checked against a model of the bit set.
public unsafe class BitSetAllocatorPropertyTests
{
    [Theory]
    [InlineData(8u)]
    [InlineData(16u)]
    [InlineData(64u)]
    public void Random_operations_agree_with_the_live_block_model(uint blockSize)
    {
        // Model: AllocatorModel's list of live blocks (no overlap, alignment, contents intact).
        var settings = new ModelSettings
        {
            MaxSize = 2048,
            MaxAlignmentLog2 = 9,
            ResetWeight = 1,
            MaxSteps = 150,
            Iterations = 60,
        };
        nuint memorySize = 40 * 1024 + 24; // not a whole number of words of blocks
        long steps = AllocatorModel.Run(
            settings,
            () => new BitSetAllocator(new NativeMemorySource(), blockSize, memorySize),
            allocator => allocator.Reset(),
            allocator =>
            {
                Assert.Equal(allocator.BlockCount, allocator.FreeBlockCount);
                Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
                Assert.Equal(0, allocator.Statistics.BytesInUse);
                nuint capacity = allocator.BlockCount * allocator.BlockSize;
                byte* all = allocator.Allocate(capacity, 8);
                AssertSameAddress((byte*)allocator.Range.From, all);
                allocator.Deallocate(all, capacity, 8);
            });
        Assert.True(steps >= 3000, $"only {steps} steps ran");
    }

    [Theory]
    [InlineData(0, 300, 150)]
    [InlineData(8, 300, 150)]
    [InlineData(40, 300, 150)]
    [InlineData(0, 2500, 700)] // long runs: whole words, vectorised checks and scans
    [InlineData(24, 2500, 700)]
    public void Random_operations_agree_with_a_block_occupancy_model(int regionOffset, int blockCount, int maxRun)
    {
        // Model: bool[] of block occupancy. Allocating n blocks marks exactly those blocks, freeing
        // clears them; the raw bit set words must match (block 64w + j is bit 63 − j of word w,
        // padding bits set), and an allocation fails only when no aligned free run exists.
        // The blocks start regionOffset bytes past a page, so block indices and address
        // alignment disagree unless the offset is zero. Wrong frees (a size of another block count,
        // an interior pointer, a free block) must throw and leave the model and the bit set as
        // they were, like a refused allocation.
        const nuint BlockSize = 8;
        nuint regionSize = ((nuint)blockCount * BlockSize) + (2 * (((nuint)blockCount + 63) / 64) * sizeof(ulong));
        byte* page = (byte*)NativeMemory.AlignedAlloc(regionSize + 64, 4096);
        var step = Gen.Select(Gen.Int[0, 11], Gen.Int[1, maxRun], Gen.Int[0, 10], Gen.Int[0, 1 << 20]);
        try
        {
            long executed = 0;
            step.Array[1, 150].Sample(steps =>
            {
                using var allocator = new BitSetAllocator(page + regionOffset, regionSize, BlockSize);
                Assert.Equal((nuint)blockCount, allocator.BlockCount);
                var model = new bool[blockCount];
                var live = new List<(nuint First, nuint Count)>();
                foreach (var (kind, blocks, alignmentLog2, pick) in steps)
                {
                    if (kind < 6 || live.Count == 0)
                    {
                        nuint alignment = (nuint)1 << alignmentLog2;
                        bool fits = ModelHasAlignedRun(model, allocator.Range.From, BlockSize, (nuint)blocks, alignment);
                        bool allocated = allocator.TryAllocate((nuint)blocks * BlockSize, alignment, out byte* pointer);
                        Assert.Equal(fits, allocated);
                        if (allocated)
                        {
                            Assert.True(Allocator.IsAligned((nuint)pointer, alignment));
                            nuint first = BlockIndex(allocator, pointer);
                            for (nuint b = first; b < first + (nuint)blocks; b++)
                            {
                                Assert.False(model[b], $"block {b} handed out twice");
                                model[b] = true;
                            }

                            live.Add((first, (nuint)blocks));
                        }
                    }
                    else if (kind >= 9)
                    {
                        var (first, count) = live[pick % live.Count];
                        AssertWrongFreeIsRefused(allocator, model, live, first, count, kind, pick >> 8);
                    }
                    else
                    {
                        int index = pick % live.Count;
                        var (first, count) = live[index];
                        allocator.Deallocate((byte*)(allocator.Range.From + (first * BlockSize)), count * BlockSize, 8);
                        Array.Fill(model, false, (int)first, (int)count);
                        live.RemoveAt(index);
                    }

                    AssertBitSetMatches(allocator, model);
                }

                Interlocked.Add(ref executed, steps.Length);
            }, iter: 60, threads: 1);
            Assert.True(executed >= 3000, $"only {executed} steps ran");
        }
        finally
        {
            NativeMemory.AlignedFree(page);
        }
    }

    /// <summary>
    /// A free that names no live block: the live block at <paramref name="first"/> with a size of
    /// another block count (kind 9), a pointer inside it (kind 10), or the block just past it when
    /// that is free or inside another run (kind 11). It must throw and change nothing.
    /// </summary>
    private static void AssertWrongFreeIsRefused(
        BitSetAllocator allocator, bool[] model, List<(nuint First, nuint Count)> live, nuint first, nuint count, int kind, int pick)
    {
        nuint pointerBlock;
        nuint blocks;
        if (kind == 9 || (kind == 10 && count == 1))
        {
            // Smaller when possible every other time, otherwise larger (past the end too).
            pointerBlock = first;
            blocks = count > 1 && pick % 2 == 0 ? 1 + ((nuint)pick % (count - 1)) : count + 1 + ((nuint)pick % 3);
        }
        else if (kind == 10)
        {
            pointerBlock = first + 1 + ((nuint)pick % (count - 1));
            blocks = pick % 2 == 0 ? first + count - pointerBlock : 1 + ((nuint)pick % count);
        }
        else
        {
            pointerBlock = first + count;
            blocks = 1 + ((nuint)pick % 4);
            if (pointerBlock >= (nuint)model.Length
                || live.Exists(l => l.First == pointerBlock))
            {
                return; // past the end, or the start of another live block: a valid free
            }
        }

        AllocatorStatistics before = allocator.Statistics;
        nuint free = allocator.FreeBlockCount;
        byte* pointer = (byte*)(allocator.Range.From + (pointerBlock * allocator.BlockSize));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, blocks * allocator.BlockSize, 8));
        if (blocks > 1)
        {
            Assert.Throws<ArgumentException>(() => allocator.TryShrinkInPlace(pointer, blocks * allocator.BlockSize, allocator.BlockSize, 8));
        }

        Assert.Equal(before, allocator.Statistics);
        Assert.Equal(free, allocator.FreeBlockCount);
        AssertBitSetMatches(allocator, model);
    }

    private static bool ModelHasAlignedRun(bool[] model, nuint blocksStart, nuint blockSize, nuint count, nuint alignment)
    {
        for (nuint first = 0; first + count <= (nuint)model.Length; first++)
        {
            if (!Allocator.IsAligned(blocksStart + (first * blockSize), alignment))
            {
                continue;
            }

            int taken = Array.IndexOf(model, true, (int)first, (int)count);
            if (taken < 0)
            {
                return true;
            }

            // No run can start before the allocated block just found (keeps long runs linear).
            first = (nuint)taken;
        }

        return false;
    }

    private static void AssertBitSetMatches(BitSetAllocator allocator, bool[] model)
    {
        allocator.Validate();

        // The bit set follows the blocks in the region.
        ulong* words = (ulong*)allocator.Range.To;
        int wordCount = (model.Length + 63) / 64;
        int free = 0;
        for (int block = 0; block < wordCount * 64; block++)
        {
            bool set = (words[block / 64] & (1UL << (63 - (block % 64)))) != 0;
            bool expected = block >= model.Length || model[block];
            Assert.True(expected == set, $"block {block}: bit is {set}, model says {expected}");
            free += expected ? 0 : 1;
        }

        Assert.Equal((nuint)free, allocator.FreeBlockCount);
        Assert.Equal((long)(model.Length - free) * (long)allocator.BlockSize, allocator.Statistics.BytesInUse);
    }
}
