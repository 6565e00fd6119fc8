namespace AllocHosting.Allocators.Tests;

/// <summary>The <see cref="ExternalNativeAllocatorContract"/> checks for jemalloc; skipped, with the loader's reason, where it cannot be loaded.</summary>
public sealed class JemallocAllocatorTests : ExternalNativeAllocatorContract
{
    protected override NativeAllocatorLibrary Library => NativeAllocatorLibrary.Jemalloc;

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void The_model_based_property_test_passes() => RunModel();

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void Usable_sizes_are_the_librarys_and_blocks_grow_in_place_up_to_them() => CheckUsableSizes();

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void Growth_in_place_is_the_librarys_own_answer() => CheckGrowthInPlaceIsTheLibrarys();

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void A_checking_instance_refuses_bad_input_and_changes_nothing() => CheckBadInputIsRefused();

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void Impossible_sizes_return_false_and_keep_the_block() => CheckImpossibleSizesReturnFalse();

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void Blocks_are_freed_from_another_thread() => CheckCrossThreadFrees();

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void The_model_based_property_test_passes_without_counting() => RunModelUncounted();

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void An_instance_that_does_not_count_reports_only_failures() => CheckUncountedInstance();

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public unsafe void A_large_block_really_shrinks_in_place_and_grows_back_when_its_tail_is_free()
    {
        using ExternalNativeAllocator allocator = ExternalNativeAllocator.Load(NativeAllocatorLibrary.Jemalloc, trackOwnership: true);
        const nuint Large = 1 << 20, Small = 64 * 1024;
        byte* block = allocator.Allocate(Large, 64);
        new Span<byte>(block, (int)Small).Fill(9);

        // xallocx gives the tail back: the block's own size (sallocx) drops to the smaller size class.
        Assert.True(allocator.TryShrinkInPlace(block, Large, Small, 64));
        Assert.Equal(allocator.GetUsableSize(Small, 64), allocator.GetBlockUsableSize(block));

        // And growing back into the tail it just gave up works in place, when nothing took it since.
        if (allocator.TryGrowInPlace(block, Small, Large, 64))
        {
            Assert.True(allocator.GetBlockUsableSize(block) >= Large);
            allocator.Deallocate(block, Large, 64);
        }
        else
        {
            allocator.Deallocate(block, Small, 64);
        }

        Assert.True(new Span<byte>(block, 0).IsEmpty);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }
}
