namespace AllocHosting.Allocators.Tests;

/// <summary>The <see cref="ExternalNativeAllocatorContract"/> checks for mimalloc; skipped, with the loader's reason, where it cannot be loaded.</summary>
public sealed class MimallocAllocatorTests : ExternalNativeAllocatorContract
{
    protected override NativeAllocatorLibrary Library => NativeAllocatorLibrary.Mimalloc;

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void The_model_based_property_test_passes() => RunModel();

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void Usable_sizes_are_the_librarys_and_blocks_grow_in_place_up_to_them() => CheckUsableSizes();

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void Growth_in_place_is_the_librarys_own_answer() => CheckGrowthInPlaceIsTheLibrarys();

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void A_checking_instance_refuses_bad_input_and_changes_nothing() => CheckBadInputIsRefused();

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void Impossible_sizes_return_false_and_keep_the_block() => CheckImpossibleSizesReturnFalse();

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void Blocks_are_freed_from_another_thread() => CheckCrossThreadFrees();

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void The_model_based_property_test_passes_without_counting() => RunModelUncounted();

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void An_instance_that_does_not_count_reports_only_failures() => CheckUncountedInstance();

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public unsafe void Mi_expand_grows_within_the_block_and_says_no_beyond_it()
    {
        using ExternalNativeAllocator allocator = ExternalNativeAllocator.Load(NativeAllocatorLibrary.Mimalloc, trackOwnership: true);
        byte* block = allocator.Allocate(100, 16);
        nuint room = allocator.GetBlockUsableSize(block);
        Assert.Equal(allocator.GetUsableSize(100, 16), room);   // mi_good_size agrees with mi_usable_size
        Assert.True(allocator.TryGrowInPlace(block, 100, room, 16));
        Assert.False(allocator.TryGrowInPlace(block, room, room + 1, 16));
        allocator.Deallocate(block, room, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }
}
