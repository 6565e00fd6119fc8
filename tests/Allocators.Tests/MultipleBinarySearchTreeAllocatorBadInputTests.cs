using System.Runtime.InteropServices;
using static AllocHosting.Allocators.Tests.TreeAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// Foreign, misaligned and double-freed pointers are refused and change nothing.
public unsafe class MultipleBinarySearchTreeAllocatorBadInputTests
{
    [Fact]
    public void Free_of_a_foreign_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* pointer = allocator.Allocate(64, 8);
        var counts = FreeBlockCounts(allocator);
        var statistics = allocator.Statistics;
        byte* foreign = (byte*)NativeMemory.AlignedAlloc(64, 64);
        try
        {
            Assert.Throws<ArgumentException>(() => allocator.Deallocate(foreign, 64, 8));
            Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)(allocator.Range.To), 32, 8));
            Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)(allocator.Range.From - 32), 32, 8));
            Assert.Throws<ArgumentException>(() => allocator.Deallocate((byte*)(allocator.Range.To - 32), 64, 8)); // runs past the end
            Assert.Throws<ArgumentException>(() => allocator.TryGrowInPlace(foreign, 64, 128, 8));
            Assert.Throws<ArgumentException>(() => allocator.ShrinkingReallocate(foreign, 64, 32, 8));
        }
        finally
        {
            NativeMemory.AlignedFree(foreign);
        }

        Assert.Equal(counts, FreeBlockCounts(allocator));
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Deallocate(pointer, 64, 8);
        allocator.Validate();
    }

    [Fact]
    public void Free_of_a_misaligned_pointer_throws_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* pointer = allocator.Allocate(64, 64);
        var counts = FreeBlockCounts(allocator);
        var statistics = allocator.Statistics;
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer + 8, 32, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer + 32, 32, 64)); // not aligned to the alignment given
        Assert.Equal(counts, FreeBlockCounts(allocator));
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Validate();
    }

    [Fact]
    public void Free_with_a_larger_size_class_than_the_block_is_refused_when_the_pointer_is_not_aligned_to_it()
    {
        using var allocator = Create(4096);
        byte* lower = allocator.Allocate(32, 8);
        byte* upper = allocator.Allocate(32, 8);
        Assert.True(upper == lower + 32);
        var counts = FreeBlockCounts(allocator);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(upper, 64, 8));
        Assert.Throws<ArgumentException>(() => allocator.TryGrowInPlace(upper, 64, 128, 8));
        Assert.Equal(counts, FreeBlockCounts(allocator));
        Assert.Equal(64, allocator.Statistics.BytesInUse);
        allocator.Validate();
    }

    [Fact]
    public void Double_free_throws_and_changes_nothing()
    {
        using var allocator = Create(4096);
        byte* kept = allocator.Allocate(64, 8);
        byte* freed = allocator.Allocate(64, 8);
        Assert.True(freed == kept + 64);
        allocator.Deallocate(freed, 64, 8); // its buddy is live, so it stays a 64-byte block
        var counts = FreeBlockCounts(allocator);
        var statistics = allocator.Statistics;
        var error = Assert.Throws<ArgumentException>(() => allocator.Deallocate(freed, 64, 8));
        Assert.Contains("double free", error.Message, StringComparison.Ordinal);
        Assert.Equal(counts, FreeBlockCounts(allocator));
        Assert.Equal(statistics, allocator.Statistics);
        allocator.Validate();
    }

    [Fact]
    public void Double_free_of_an_over_size_block_throws_and_changes_nothing()
    {
        using var allocator = new MultipleBinarySearchTreeAllocator(MiBSource, 4 * MiB, 32, 64 * KiB);
        byte* keep = allocator.Allocate(64 * KiB, 8);
        byte* pointer = allocator.Allocate(128 * KiB, 8);
        allocator.Deallocate(pointer, 128 * KiB, 8);
        var counts = FreeBlockCounts(allocator);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 128 * KiB, 8));
        Assert.Equal(counts, FreeBlockCounts(allocator));
        allocator.Deallocate(keep, 64 * KiB, 8);
        allocator.Validate();
    }

    [Fact]
    public void Zero_size_requests_return_the_sentinel_and_touch_nothing()
    {
        using var allocator = Create(256);
        var counts = FreeBlockCounts(allocator);
        Assert.True(allocator.Allocate(0, 64) == Allocator.ZeroSizeSentinel);
        allocator.Deallocate(Allocator.ZeroSizeSentinel, 0, 64);
        Assert.Equal(counts, FreeBlockCounts(allocator));
        Assert.Equal(0, allocator.Statistics.AllocationCount);
        Assert.Equal(0u, allocator.GetUsableSize(0, 8));
    }
}
