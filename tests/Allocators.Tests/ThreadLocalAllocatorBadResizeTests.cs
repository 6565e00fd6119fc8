using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Issue 11, "Bad input, every allocator", as the model found it in <see cref="ThreadLocalAllocator"/>:
/// a resize of a slab block already freed was accepted (only the free path checked the free stamp),
/// and shrinking a foreign pointer to a slab size took a slab block before the pointer was refused,
/// so the refusal left that block allocated.
/// </summary>
public unsafe class ThreadLocalAllocatorBadResizeTests
{
    [Theory]
    [InlineData("grow in place")]
    [InlineData("grow")]
    [InlineData("shrink in place")]
    [InlineData("shrink")]
    public void A_resize_of_a_freed_slab_block_is_refused_and_changes_nothing(string how)
    {
        using var allocator = new ThreadLocalAllocator();
        byte* keep = allocator.Allocate(100, 16);
        byte* freed = allocator.Allocate(100, 16);
        allocator.Deallocate(freed, 100, 16);
        AllocatorStatistics before = allocator.Statistics;

        Action resize = how switch
        {
            "grow in place" => () => allocator.TryGrowInPlace(freed, 100, 110, 16),
            "grow" => () => allocator.GrowingReallocate(freed, 100, 4000, 16),
            "shrink in place" => () => allocator.TryShrinkInPlace(freed, 100, 90, 16),
            _ => () => allocator.ShrinkingReallocate(freed, 100, 20, 16),
        };

        Assert.Throws<ArgumentException>(resize);
        Assert.Equal(before, allocator.Statistics);

        // The freed block is still free: it is handed out again, once, and freeing it twice is still refused.
        byte* again = allocator.Allocate(100, 16);
        Assert.True(again == freed, "the freed block is the next one handed out");
        allocator.Deallocate(again, 100, 16);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(again, 100, 16));
        allocator.Deallocate(keep, 100, 16);
    }

    [Fact]
    public void Shrinking_a_foreign_pointer_into_a_slab_size_allocates_nothing()
    {
        using var allocator = new ThreadLocalAllocator();
        byte* keep = allocator.Allocate(64, 16);
        byte* foreign = (byte*)NativeMemory.AlignedAlloc(512 * 1024, 4096);
        try
        {
            AllocatorStatistics before = allocator.Statistics;
            Assert.Throws<ArgumentException>(() => allocator.ShrinkingReallocate(foreign, 400 * 1024, 100, 16));
            Assert.Equal(before, allocator.Statistics);
        }
        finally
        {
            NativeMemory.AlignedFree(foreign);
        }

        allocator.Deallocate(keep, 64, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }
}
