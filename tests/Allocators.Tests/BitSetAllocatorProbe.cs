using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

// What the BitSetAllocator tests share: allocators over fresh regions and readers of their bit set
// through the public diagnostics.
internal static unsafe class BitSetAllocatorProbe
{
    public static BitSetAllocator Create(nuint blockSize, nuint blocks) =>
        new(new NativeMemorySource(), blockSize, blockSize * blocks);

    public static nuint BlockIndex(BitSetAllocator allocator, byte* pointer) =>
        ((nuint)pointer - allocator.Range.From) / allocator.BlockSize;

    public static void AssertSameAddress(byte* expected, byte* actual) =>
        Assert.Equal((nuint)expected, (nuint)actual);

    public static void AssertBlocks(BitSetAllocator allocator, nuint first, nuint count, bool allocated)
    {
        for (nuint block = first; block < first + count; block++)
        {
            Assert.Equal(allocated, allocator.IsBlockAllocated(block));
        }
    }

    // Checks the bit set against the bookkeeping, then answers the free block count both agree on.
    public static nuint ValidatedFreeBlockCount(BitSetAllocator allocator)
    {
        allocator.Validate();
        return allocator.FreeBlockCount;
    }

    public static List<Pointer> FillWithSingleBlocks(BitSetAllocator allocator)
    {
        var blocks = new List<Pointer>();
        while (allocator.TryAllocate(1, 1, out byte* pointer))
        {
            Assert.True(allocator.Range.Contains((nuint)pointer, allocator.BlockSize), $"0x{(nuint)pointer:X} lies in the blocks");
            blocks.Add(pointer);
        }

        Assert.Equal(allocator.BlockCount, (nuint)blocks.Count);
        Assert.Equal((nuint)0, allocator.FreeBlockCount);
        return blocks;
    }

    /// <summary>A pointer that can live in a list.</summary>
    public readonly record struct Pointer(nuint Address)
    {
        public static implicit operator Pointer(byte* pointer) => new((nuint)pointer);

        public static implicit operator byte*(Pointer pointer) => (byte*)pointer.Address;

        public static explicit operator nuint(Pointer pointer) => pointer.Address;
    }
}
