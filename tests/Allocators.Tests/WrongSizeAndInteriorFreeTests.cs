namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Issue 11, point 3: a free with a size larger than the block's, or of a pointer inside a live
/// block, throws <see cref="ArgumentException"/> and changes nothing (the bit set allocator checks
/// its run starts, the tree allocator its map of live block classes). The allocator-specific cases
/// are in <see cref="BitSetAllocatorWrongFreeTests"/> and <see cref="TreeAllocatorBadFreeTests"/>.
/// </summary>
public unsafe class WrongSizeAndInteriorFreeTests
{
    public static TheoryData<string> RegionAllocators => new() { "bitset", "tree" };

    [Theory]
    [MemberData(nameof(RegionAllocators))]
    public void A_free_larger_than_the_block_is_refused_and_changes_nothing(string kind)
    {
        using AllocatorBase allocator = AllocatorFactories.Create(kind);
        byte* first = allocator.Allocate(64, 8);
        byte* neighbour = allocator.Allocate(64, 8);
        AllocatorStatistics before = allocator.Statistics;
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(first, 128, 8));
        Assert.Equal(before, allocator.Statistics);
        allocator.Deallocate(first, 64, 8);
        allocator.Deallocate(neighbour, 64, 8);
    }

    [Theory]
    [MemberData(nameof(RegionAllocators))]
    public void A_free_of_an_interior_pointer_is_refused_and_changes_nothing(string kind)
    {
        using AllocatorBase allocator = AllocatorFactories.Create(kind);
        byte* block = allocator.Allocate(256, 8);
        AllocatorStatistics before = allocator.Statistics;
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(block + 64, 64, 8));
        Assert.Equal(before, allocator.Statistics);
        allocator.Deallocate(block, 256, 8);
    }
}
