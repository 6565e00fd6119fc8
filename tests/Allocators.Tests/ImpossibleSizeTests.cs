namespace AllocHosting.Allocators.Tests;

/// <summary>The Try forms of every allocator return false, never throw, for sizes no allocator can serve.</summary>
public unsafe class ImpossibleSizeTests
{
    public static TheoryData<string> Allocators => AllocatorFactories.Names;

    private static IEnumerable<nuint> ImpossibleSizes =>
    [
        Allocator.MaximumSize,
        Allocator.MaximumSize - 1,
        Allocator.MaximumSize - Allocator.MaximumAlignment,
        (nuint)1 << 62,
        (nuint)1 << 48,
    ];

    private static IEnumerable<nuint> Alignments => [1, 8, 16, 4096, 1 << 21, Allocator.MaximumAlignment];

    [Theory]
    [MemberData(nameof(Allocators))]
    public void TryAllocate_of_an_impossible_size_returns_false(string kind)
    {
        using AllocatorBase allocator = AllocatorFactories.Create(kind);
        foreach (nuint size in ImpossibleSizes)
        {
            foreach (nuint alignment in Alignments)
            {
                bool allocated = true;
                byte* pointer = null;
                Exception? error = Record.Exception(() => allocated = allocator.TryAllocate(size, alignment, out pointer));
                Assert.True(error is null, $"TryAllocate({size}, {alignment}) threw {error}");
                Assert.False(allocated, $"TryAllocate({size}, {alignment}) succeeded");
                Assert.True(pointer == null);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Allocators))]
    public void TryGrowingReallocate_to_an_impossible_size_returns_false_and_keeps_the_block(string kind)
    {
        using AllocatorBase allocator = AllocatorFactories.Create(kind);
        foreach (nuint alignment in (nuint[])[8, 16, 4096])
        {
            byte* block = allocator.Allocate(64, alignment);
            block[0] = 42;
            foreach (nuint size in ImpossibleSizes)
            {
                bool grown = true;
                byte* moved = null;
                Exception? error = Record.Exception(() => grown = allocator.TryGrowingReallocate(block, 64, size, alignment, out moved));
                Assert.True(error is null, $"TryGrowingReallocate(64 -> {size}, {alignment}) threw {error}");
                Assert.False(grown, $"TryGrowingReallocate(64 -> {size}, {alignment}) succeeded");
                Assert.False(allocator.TryGrowInPlace(block, 64, size, alignment));
            }

            Assert.Equal(42, block[0]);
            allocator.Deallocate(block, 64, alignment);
        }
    }

    [LinuxFact]
    public void A_region_too_large_after_rounding_says_why_without_contradicting_itself()
    {
        var source = new MemorySources.MemoryMapSource();
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => source.TryObtainAligned(Allocator.MaximumSize, Allocator.MaximumAlignment, out _));
        Assert.Equal("size", error.ParamName);
        Assert.DoesNotContain("the largest request is", error.Message, StringComparison.Ordinal);
        Assert.Contains("rounded up", error.Message, StringComparison.Ordinal);
    }
}
