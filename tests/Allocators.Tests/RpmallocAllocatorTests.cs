namespace AllocHosting.Allocators.Tests;

/// <summary>The <see cref="ExternalNativeAllocatorContract"/> checks for rpmalloc; skipped, with the loader's reason, where it cannot be loaded.</summary>
public sealed class RpmallocAllocatorTests : ExternalNativeAllocatorContract
{
    protected override NativeAllocatorLibrary Library => NativeAllocatorLibrary.Rpmalloc;

    [NativeAllocatorFact(NativeAllocatorLibrary.Rpmalloc)]
    public void The_model_based_property_test_passes() => RunModel();

    [NativeAllocatorFact(NativeAllocatorLibrary.Rpmalloc)]
    public void Usable_sizes_are_the_librarys_and_blocks_grow_in_place_up_to_them() => CheckUsableSizes();

    [NativeAllocatorFact(NativeAllocatorLibrary.Rpmalloc)]
    public void Growth_in_place_is_the_librarys_own_answer() => CheckGrowthInPlaceIsTheLibrarys();

    [NativeAllocatorFact(NativeAllocatorLibrary.Rpmalloc)]
    public void A_checking_instance_refuses_bad_input_and_changes_nothing() => CheckBadInputIsRefused();

    [NativeAllocatorFact(NativeAllocatorLibrary.Rpmalloc)]
    public void Impossible_sizes_return_false_and_keep_the_block() => CheckImpossibleSizesReturnFalse();

    [NativeAllocatorFact(NativeAllocatorLibrary.Rpmalloc)]
    public void Blocks_are_freed_from_another_thread() => CheckCrossThreadFrees();

    [NativeAllocatorFact(NativeAllocatorLibrary.Rpmalloc)]
    public void The_model_based_property_test_passes_without_counting() => RunModelUncounted();

    [NativeAllocatorFact(NativeAllocatorLibrary.Rpmalloc)]
    public void An_instance_that_does_not_count_reports_only_failures() => CheckUncountedInstance();
}
