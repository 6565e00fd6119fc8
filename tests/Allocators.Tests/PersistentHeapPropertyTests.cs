using AllocHosting.Allocators.Tests.Model;
using CsCheck;
using static AllocHosting.Allocators.Tests.PersistentHeapFiles;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// The persistent heap against the contract's model (<see cref="AllocatorModel"/>): random allocations,
/// frees, grows, shrinks and bad input, with the heap's own check of file against index after every
/// step; and the same sequences followed by a reopen, which must find the model's live blocks.
/// </summary>
public unsafe class PersistentHeapPropertyTests
{
    private const long HeapSize = 128 * 1024;

    // The settings of the bad-input test of the region allocators: the alignment is not recorded
    // (IAllocator's remarks), every other bad input is refused.
    private static ModelSettings Settings => BadInputSettings.For("persistent") with { MaxSize = 3000, MaxAlignmentLog2 = 9, MaxSteps = 120, Iterations = 60 };

    // Model: AllocatorModel's live blocks (aligned, owned, no overlap, contents kept; bad input refused
    // and changing nothing). In addition the file's block headers must match the heap's index after every
    // step, and once everything is freed the data area must be one free block again.
    [LinuxFact]
    public void Random_operations_with_bad_input_keep_the_model_and_the_file_consistent()
    {
        ModelSettings settings = Settings;
        long executed = 0;
        AllocatorModel.Steps(settings).Array[settings.MinSteps, settings.MaxSteps].Sample(
            steps =>
            {
                using PersistentHeap heap = CreateUnlinked();
                var runner = new AllocatorModel.Runner(heap);
                foreach (ModelStep step in steps)
                {
                    runner.Apply(step, null);
                    runner.CheckInvariants();
                    heap.Validate();
                }

                runner.FreeAll();
                heap.Validate();
                Assert.Equal(0, heap.Statistics.BytesInUse);
                Assert.Equal(4096 + 16, heap.AllocateOffset((nuint)(heap.Capacity - 16)));
                executed += steps.Length;
            },
            iter: settings.Iterations,
            threads: 1);
        Assert.True(executed >= 2000, $"only {executed} steps ran");
    }

    // Model: after a random sequence (the model's live blocks, each filled with its own byte), the heap
    // is closed and reopened: the live blocks at the same offsets, with the same usable sizes and
    // contents, and nothing else; every one can then be freed by offset.
    [LinuxFact]
    public void After_random_operations_a_reopened_heap_holds_the_model_blocks()
    {
        long reopened = 0;
        AllocatorModel.Steps(Settings with { BadInputWeight = 0, HugeGrowWeight = 0 }).Array[1, 120].Sample(
            steps =>
            {
                string path = NewPath();
                try
                {
                    List<(long Offset, AllocatorModel.Block Block)> live;
                    using (var heap = PersistentHeap.Create(path, HeapSize))
                    {
                        var runner = new AllocatorModel.Runner(heap);
                        foreach (ModelStep step in steps)
                        {
                            runner.Apply(step, null);
                        }

                        heap.Validate();
                        live = [.. runner.Live.Select(b => (heap.ToOffset((byte*)b.Address), b))];
                    }

                    using var again = PersistentHeap.Open(path);
                    again.Validate();
                    Assert.Equal(
                        live.Select(l => (l.Offset, (long)again.GetUsableSize(l.Block.Size, 16))).Order(),
                        again.GetLiveBlocks().Select(b => (b.Offset, b.UsableSize)));
                    foreach ((long offset, AllocatorModel.Block block) in live)
                    {
                        Assert.True(new ReadOnlySpan<byte>(again.ToPointer(offset), (int)block.Size).IndexOfAnyExcept(block.FillByte) < 0);
                        again.FreeOffset(offset, block.Size);
                    }

                    again.Validate();
                    reopened++;
                }
                finally
                {
                    Delete(path);
                }
            },
            iter: 40,
            threads: 1);
        Assert.Equal(40, reopened);
    }

    // A heap whose file is unlinked at once: the mapping keeps it alive until the heap is disposed.
    private static PersistentHeap CreateUnlinked()
    {
        string path = NewPath();
        var heap = PersistentHeap.Create(path, HeapSize);
        File.Delete(path);
        return heap;
    }
}
