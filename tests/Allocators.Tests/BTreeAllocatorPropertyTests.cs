using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;
using CsCheck;

namespace AllocHosting.Allocators.Tests;

// Random operation sequences checked against the model and the allocator's own invariants.
public unsafe class BTreeAllocatorPropertyTests
{
    // Model: AllocatorModel's list of live blocks (alignment, ownership, no overlap, contents
    // preserved across allocations and reallocations, bytes in use covering the live blocks); in
    // addition BTreeAllocator.Validate after every step (both B-trees valid, blocks tiling the
    // regions, no two free blocks touching, the size tree holding exactly the free blocks, the live
    // bytes equal to the statistics). Regions of 4 KiB and sizes up to 6,000 bytes make many
    // requests over-size; alignments up to 4 KiB make split fronts; the 128 KiB limit makes
    // exhaustion reachable. After freeing everything the free memory is one block per region span.
    [Fact]
    public void Random_operations_keep_every_invariant_after_every_step()
    {
        var settings = new ModelSettings { MaxSize = 6000, MaxAlignmentLog2 = 12, MaxSteps = 150, Iterations = 60 };
        long executed = 0;
        AllocatorModel.Steps(settings).Array[settings.MinSteps, settings.MaxSteps].Sample(
            steps =>
            {
                using var allocator = new BTreeAllocator(new NativeMemorySource(), 4 * 1024, 128 * 1024);
                var runner = new AllocatorModel.Runner(allocator);
                foreach (var step in steps)
                {
                    runner.Apply(step, null);
                    runner.CheckInvariants();
                    allocator.Validate();
                }

                runner.FreeAll();
                allocator.Validate();
                Assert.Equal(0, allocator.Statistics.BytesInUse);
                Assert.True(allocator.FreeBlockCount <= allocator.RegionCount, "freeing everything merges every region back into one block");
                Interlocked.Add(ref executed, steps.Length);
            },
            iter: settings.Iterations,
            threads: 1);
        Assert.True(executed >= 2000, $"only {executed} steps ran");
    }

    // Model: as above, with bad frees, grows and shrinks (wrong sizes, interior pointers, double
    // frees, foreign pointers) and grows to impossible sizes drawn among the steps: each is refused
    // with ArgumentException (or reported as exhaustion) and changes nothing, which Validate confirms.
    [Fact]
    public void Random_bad_input_is_refused_and_keeps_every_invariant()
    {
        ModelSettings settings = BadInputSettings.For("btree") with { MaxSize = 3000, MaxAlignmentLog2 = 10, Iterations = 60 };
        long executed = 0;
        AllocatorModel.Steps(settings).Array[settings.MinSteps, settings.MaxSteps].Sample(
            steps =>
            {
                using var allocator = new BTreeAllocator(new NativeMemorySource(), 4 * 1024, 128 * 1024);
                var runner = new AllocatorModel.Runner(allocator);
                foreach (var step in steps)
                {
                    runner.Apply(step, null);
                    runner.CheckInvariants();
                    allocator.Validate();
                }

                runner.FreeAll();
                allocator.Validate();
                Interlocked.Add(ref executed, steps.Length);
            },
            iter: settings.Iterations,
            threads: 1);
        Assert.True(executed >= 1000, $"only {executed} steps ran");
    }
}
