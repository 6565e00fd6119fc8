using System.Diagnostics;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

// A freed block merges at once with the free blocks before and after it, whatever the order of
// the frees, so that freeing everything leaves one free block per region (and back-to-back regions
// one between them); and a long fragmenting run keeps every invariant and gives everything back.
public unsafe class BTreeAllocatorCoalescingTests
{
    private const nuint KiB = 1024;

    [Fact]
    public void Freeing_a_block_between_two_free_blocks_merges_all_three()
    {
        using var allocator = new BTreeAllocator(new NativeMemorySource(), 16 * KiB, 64 * KiB);
        byte* a = allocator.Allocate(64, 16);
        byte* b = allocator.Allocate(64, 16);
        byte* c = allocator.Allocate(64, 16);
        byte* d = allocator.Allocate(64, 16);
        allocator.Deallocate(a, 64, 16);
        allocator.Deallocate(c, 64, 16);
        Assert.Equal(3L, allocator.FreeBlockCount);   // a, c, and the rest after d
        allocator.Deallocate(b, 64, 16);
        Assert.Equal(2L, allocator.FreeBlockCount);   // a + b + c, and the rest
        allocator.Validate();
        Assert.True(allocator.Allocate(192, 16) == a);
        allocator.Deallocate(a, 192, 16);
        allocator.Deallocate(d, 64, 16);
        Assert.Equal(1L, allocator.FreeBlockCount);
        Assert.Equal(16 * KiB, allocator.LargestFreeBlock);
        allocator.Validate();
    }

    [Fact]
    public void Freeing_five_blocks_in_every_order_leaves_one_free_block()
    {
        int[][] orders = [.. Permutations([0, 1, 2, 3, 4])];
        Assert.Equal(120, orders.Length);
        using var allocator = new BTreeAllocator(new NativeMemorySource(), 16 * KiB, 64 * KiB);
        nuint[] sizes = [16, 48, 32, 112, 16];
        foreach (int[] order in orders)
        {
            var blocks = sizes.Select(size => (nuint)allocator.Allocate(size, 16)).ToArray();
            foreach (int index in order)
            {
                allocator.Deallocate((byte*)blocks[index], sizes[index], 16);
                allocator.Validate();
            }

            Assert.Equal(1L, allocator.FreeBlockCount);
            Assert.Equal(1, allocator.RegionCount);
        }
    }

    [Fact]
    public void Blocks_of_several_regions_coalesce_within_each_region()
    {
        using var allocator = new BTreeAllocator(new NativeMemorySource(), 16 * KiB, 1024 * KiB);
        var blocks = new List<nuint>();
        for (int i = 0; i < 100; i++)
        {
            blocks.Add((nuint)allocator.Allocate(1000, 16));
        }

        Assert.True(allocator.RegionCount >= 7, $"{allocator.RegionCount} regions");
        var random = new Random(14);
        foreach (nuint block in blocks.OrderBy(_ => random.Next()))
        {
            allocator.Deallocate((byte*)block, 1000, 16);
        }

        allocator.Validate();
        Assert.True(allocator.FreeBlockCount <= allocator.RegionCount);
        Assert.Equal(16 * KiB, allocator.LargestFreeBlock);
    }

    // A long fragmenting run: a live set of up to 2,000 blocks of log-uniform sizes from 16 B to
    // 64 KiB, each step freeing a random block or allocating one, some aligned to up to 4 KiB, some
    // grown or shrunk. Bounded by count and time. The invariants are checked every 1,000 steps, the
    // contents of a block before it is freed; at the end everything is freed, the free memory is one
    // block per region span, and the memory obtained stayed within a generous multiple of the peak.
    [Fact]
    public void A_long_fragmenting_run_keeps_every_invariant_and_coalesces_completely()
    {
        var source = new NativeMemorySource();
        using var allocator = new BTreeAllocator(source, 256 * KiB);
        var random = new Random(20_261_207);
        var live = new List<(nuint Address, nuint Size, byte Fill)>();
        var clock = Stopwatch.StartNew();
        int steps = 0;
        for (; steps < 100_000 && clock.Elapsed < TimeSpan.FromSeconds(3); steps++)
        {
            int choice = random.Next(10);
            if (live.Count > 0 && (choice < 4 || live.Count >= 2000))
            {
                int index = random.Next(live.Count);
                var (address, size, fill) = live[index];
                Assert.True(new ReadOnlySpan<byte>((void*)address, 16).IndexOfAnyExcept(fill) < 0, "contents survive");
                allocator.Deallocate((byte*)address, size, 16);
                live[index] = live[^1];
                live.RemoveAt(live.Count - 1);
            }
            else if (live.Count > 0 && choice == 4)
            {
                int index = random.Next(live.Count);
                var (address, size, fill) = live[index];
                nuint newSize = (nuint)random.Next(16, 2 * (int)Math.Min(size, 32 * KiB) + 17);
                byte* resized = allocator.Reallocate((byte*)address, size, newSize, 16);
                Assert.True(new ReadOnlySpan<byte>(resized, 16).IndexOfAnyExcept(fill) < 0, "contents move with the block");
                live[index] = ((nuint)resized, newSize, fill);
            }
            else
            {
                nuint size = (nuint)Math.Exp(Math.Log(16) + (random.NextDouble() * (Math.Log(64 * 1024) - Math.Log(16))));
                nuint alignment = random.Next(8) == 0 ? (nuint)1 << random.Next(5, 13) : 16;
                byte* block = allocator.Allocate(size, alignment);
                Assert.True(Allocator.IsAligned((nuint)block, alignment));
                byte fill = (byte)(1 + (steps % 255));
                new Span<byte>(block, 16).Fill(fill);
                live.Add(((nuint)block, size, fill));
            }

            if (steps % 1000 == 0)
            {
                allocator.Validate();
            }
        }

        allocator.Validate();
        long peak = allocator.Statistics.PeakBytesInUse;
        Assert.True(steps >= 5_000, $"only {steps} steps ran");
        Assert.True((long)allocator.ObtainedBytes < 4 * peak, $"{allocator.ObtainedBytes} bytes obtained for a peak of {peak} in use");
        foreach (var (address, size, _) in live)
        {
            allocator.Deallocate((byte*)address, size, 16);
        }

        allocator.Validate();
        Assert.Equal(0L, allocator.Statistics.BytesInUse);
        Assert.True(allocator.FreeBlockCount <= allocator.RegionCount);
        Assert.Equal((long)allocator.ObtainedBytes, source.BytesObtained);
    }

    private static IEnumerable<int[]> Permutations(int[] items)
    {
        if (items.Length <= 1)
        {
            yield return items;
            yield break;
        }

        for (int i = 0; i < items.Length; i++)
        {
            int[] rest = [.. items[..i], .. items[(i + 1)..]];
            foreach (int[] tail in Permutations(rest))
            {
                yield return [items[i], .. tail];
            }
        }
    }
}
