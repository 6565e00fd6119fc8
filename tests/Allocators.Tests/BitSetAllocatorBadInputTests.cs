using static AllocHosting.Allocators.Tests.BitSetAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Foreign, misaligned and already-free pointers are refused and change nothing.
public unsafe class BitSetAllocatorBadInputTests
{
    [Fact]
    public void Free_of_foreign_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create(8, 100);
        byte* live = allocator.Allocate(24, 8);
        nuint free = allocator.FreeBlockCount;
        var statistics = allocator.Statistics;
        byte* outside = stackalloc byte[16];

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(outside, 8, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(live - 8, 8, 8)); // just below the region
        Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)allocator.Range.To, 8, 8)); // the bit set
        Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)allocator.Range.To - 8, 16, 8)); // runs off the end

        Assert.Equal(free, allocator.FreeBlockCount);
        Assert.Equal(free, ValidatedFreeBlockCount(allocator));
        Assert.Equal(statistics, allocator.Statistics);
        Assert.False(allocator.Owns(outside));
        Assert.True(allocator.Owns(live));
    }

    [Fact]
    public void Free_of_misaligned_inside_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create(16, 100);
        byte* live = allocator.Allocate(48, 8);
        nuint free = allocator.FreeBlockCount;
        var statistics = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(live + 8, 16, 8));
        Assert.Throws<ArgumentException>(() => allocator.ShrinkingReallocate(live + 1, 32, 16, 8));
        Assert.Throws<ArgumentException>(() => allocator.GrowingReallocate(live + 4, 32, 64, 8));

        Assert.Equal(free, allocator.FreeBlockCount);
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Deallocate(live, 48, 8);
    }

    [Fact]
    public void Double_free_throws_and_changes_nothing()
    {
        using var allocator = Create(8, 100);
        byte* first = allocator.Allocate(24, 8);
        byte* second = allocator.Allocate(24, 8);
        allocator.Deallocate(first, 24, 8);
        nuint free = allocator.FreeBlockCount;
        var statistics = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(first, 24, 8));

        // A run that is only partly allocated: nothing is freed, not even the live part.
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(first, 48, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(first, 80 * 8, 8)); // multi-word check
        Assert.Throws<ArgumentException>(() => allocator.GrowingReallocate(first, 24, 32, 8));

        Assert.Equal(free, allocator.FreeBlockCount);
        Assert.Equal(statistics, allocator.Statistics);
        AssertBlocks(allocator, 3, 3, allocated: true);
        allocator.Deallocate(second, 24, 8);
        Assert.Equal(allocator.BlockCount, ValidatedFreeBlockCount(allocator));
    }
}
