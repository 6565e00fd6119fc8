using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

// What the MultipleBinarySearchTreeAllocator tests share: aligned regions to carve, and readers
// of an allocator's free-block picture through its public diagnostics.
internal static unsafe class TreeAllocatorProbe
{
    public const nuint KiB = 1024;
    public const nuint MiB = 1024 * 1024;

    // 4 KiB-aligned regions: every test region below 4 KiB is carved exactly as in the seed.
    public static readonly NativeMemorySource PageSource = new(4096);

    // Regions aligned to the default top class, so that they carve into whole 1 MiB blocks.
    public static readonly NativeMemorySource MiBSource = new(MiB);

    public static MultipleBinarySearchTreeAllocator Create(nuint size) => new(PageSource, size);

    public static nuint Offset(MultipleBinarySearchTreeAllocator allocator, byte* pointer) =>
        (nuint)pointer - allocator.Range.From;

    public static bool IsEmpty(MultipleBinarySearchTreeAllocator allocator) => !allocator.TryAllocate(1, 1, out _);

    // The number of free blocks in the tree of each size class (cached blocks not included),
    // index 0 being the minimum block.
    public static int[] FreeBlockCounts(MultipleBinarySearchTreeAllocator allocator) =>
        [.. Enumerable.Range(0, allocator.SizeClassCount).Select(allocator.FreeBlockCount)];

    // The free block counts of the lowest classes are as given and every other class is empty.
    public static void AssertCounts(MultipleBinarySearchTreeAllocator allocator, params int[] lowest)
    {
        int[] counts = FreeBlockCounts(allocator);
        Assert.Equal(lowest, counts.Take(lowest.Length));
        Assert.All(counts.Skip(lowest.Length), count => Assert.Equal(0, count));
    }

    public static IEnumerable<int[]> Permutations(int[] items)
    {
        if (items.Length <= 1)
        {
            yield return items;
            yield break;
        }

        for (int i = 0; i < items.Length; i++)
        {
            int[] rest = [.. items.Take(i), .. items.Skip(i + 1)];
            foreach (int[] tail in Permutations(rest))
            {
                yield return [items[i], .. tail];
            }
        }
    }
}
