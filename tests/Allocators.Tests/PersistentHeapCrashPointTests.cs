using System.Diagnostics;
using Xunit.Abstractions;
using static AllocHosting.Allocators.Tests.PersistentHeapFiles;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Crash consistency, in process: every operation of a random sequence is cut short at every one of
/// its steps (the heap's test hook throws before the k-th store that changes the file), on a copy of
/// the file, which is then reopened. The reopened heap must pass its own check (the blocks tile the
/// file, no adjacent free blocks survive the recovery scan), hold exactly the live blocks before or
/// after the operation (before, when the cut came before the commit), with every surviving block's
/// contents intact, and give its whole data area back once those blocks are freed: nothing committed
/// lost, nothing handed out twice, no space lost to the cut operation.
/// </summary>
/// <remarks>
/// A cut here stops the process's stores at one point, as SIGKILL does (the page cache keeps them all);
/// the order in which stores reach the medium after a power failure is the flushes' business, and every
/// step flushes what it wrote before the next step's store (see <see cref="PersistentHeap"/>).
/// </remarks>
public unsafe class PersistentHeapCrashPointTests(ITestOutputHelper output)
{
    private const long HeapSize = 64 * 1024;

    [LinuxFact]
    public void Every_operation_cut_at_every_step_reopens_with_the_blocks_before_or_after_it()
    {
        string basePath = NewPath();
        string nextPath = NewPath();
        string cutPath = NewPath();
        try
        {
            PersistentHeap.Create(basePath, HeapSize).Dispose();
            var random = new Random(2014);
            var model = new Dictionary<long, LiveBlock>();
            int cuts = 0;
            int committedCuts = 0;
            var clock = Stopwatch.StartNew();
            for (int index = 0; index < 400 && clock.Elapsed < TimeSpan.FromSeconds(4); index++)
            {
                Operation operation = Draw(random, model, index);

                // The operation run whole on a copy gives the state after it.
                File.Copy(basePath, nextPath, overwrite: true);
                Dictionary<long, LiveBlock> after;
                using (var heap = PersistentHeap.Open(nextPath, useLibpmem2: false))
                {
                    after = Apply(heap, operation, model);
                }

                for (int k = 1; ; k++)
                {
                    File.Copy(basePath, cutPath, overwrite: true);
                    bool completed = true;
                    using (var heap = PersistentHeap.Open(cutPath, useLibpmem2: false))
                    {
                        int calls = 0;
                        heap.CrashPoint = _ =>
                        {
                            if (++calls == k)
                            {
                                throw new CrashPointException();
                            }
                        };
                        try
                        {
                            Apply(heap, operation, model);
                        }
                        catch (CrashPointException)
                        {
                            completed = false;
                        }
                    }

                    bool committed = CheckReopened(cutPath, model, after, completed, $"{operation}, cut before store {k}");
                    cuts++;
                    committedCuts += committed && !completed ? 1 : 0;
                    if (completed)
                    {
                        break;
                    }
                }

                File.Copy(nextPath, basePath, overwrite: true);
                model = after;
            }

            output.WriteLine($"{cuts} cuts ({committedCuts} after a commit) in {clock.Elapsed.TotalSeconds:F1} s");
            Assert.True(cuts >= 200, $"only {cuts} cuts ran");
            Assert.True(committedCuts > 0, "no cut fell between a free's commit and its merges");
        }
        finally
        {
            Delete(basePath, nextPath, cutPath);
        }
    }

    // Reopens a cut file and checks it; true when it holds the state after the operation.
    private static bool CheckReopened(string path, Dictionary<long, LiveBlock> before, Dictionary<long, LiveBlock> after, bool completed, string what)
    {
        using var heap = PersistentHeap.Open(path, useLibpmem2: false);
        heap.Validate();
        var live = heap.GetLiveBlocks().ToDictionary(b => b.Offset, b => b.UsableSize);
        bool isBefore = SameBlocks(live, before);
        bool isAfter = SameBlocks(live, after);
        Assert.True(isBefore || isAfter, $"{what}: the reopened heap holds [{string.Join(", ", live.Select(l => $"{l.Key}:{l.Value}"))}], neither the blocks before nor after the operation");
        Assert.True(!completed || isAfter, $"{what}: the operation completed but its effect is missing");
        foreach ((long offset, LiveBlock block) in isAfter ? after : before)
        {
            long mismatch = FirstMismatch(heap.ToPointer(offset), offset, block.Generation, block.Filled);
            Assert.True(mismatch < 0, $"{what}: the block at {offset} lost its contents at byte {mismatch}");
        }

        foreach ((long offset, LiveBlock block) in isAfter ? after : before)
        {
            heap.FreeOffset(offset, (nuint)block.Size);
        }

        Assert.Equal(4096 + 16, heap.AllocateOffset((nuint)(heap.Capacity - 16)));
        return isAfter;
    }

    private static bool SameBlocks(Dictionary<long, long> live, Dictionary<long, LiveBlock> model) =>
        live.Count == model.Count && model.All(m => live.TryGetValue(m.Key, out long usable) && usable == Usable(m.Value.Size));

    private static long Usable(long size) => (size + 15) / 16 * 16;

    private static Operation Draw(Random random, Dictionary<long, LiveBlock> model, int index)
    {
        int kind = model.Count == 0 ? 0 : random.Next(10);
        long pick = model.Count == 0 ? 0 : model.Keys.ElementAt(random.Next(model.Count));
        return kind switch
        {
            < 5 => new Operation(OperationKind.Allocate, 0, random.Next(1, 4000), 1 << random.Next(0, 10), index),
            < 8 => new Operation(OperationKind.Free, pick, 0, 0, index),
            8 => new Operation(OperationKind.Resize, pick, random.Next(1, 200), 0, index),
            _ => new Operation(OperationKind.Root, pick, 0, 0, index),
        };
    }

    // Applies the operation to the heap and returns the model after it (the model passed is not changed).
    private static Dictionary<long, LiveBlock> Apply(PersistentHeap heap, Operation operation, Dictionary<long, LiveBlock> model)
    {
        var after = new Dictionary<long, LiveBlock>(model);
        switch (operation.Kind)
        {
            case OperationKind.Allocate:
                if (heap.TryAllocateOffset((nuint)operation.Size, (nuint)operation.Alignment, out long offset))
                {
                    Fill(heap.ToPointer(offset), offset, operation.Index, operation.Size);
                    heap.Flush(offset, (nuint)operation.Size);
                    after[offset] = new LiveBlock(operation.Size, operation.Size, operation.Index);
                }

                break;
            case OperationKind.Free:
                heap.FreeOffset(operation.Offset, (nuint)model[operation.Offset].Size);
                after.Remove(operation.Offset);
                break;
            case OperationKind.Resize:
                LiveBlock block = model[operation.Offset];
                long newSize = Math.Max(1, block.Size + operation.Size - 100);
                byte* pointer = heap.ToPointer(operation.Offset);
                bool resized = newSize == block.Size
                    || (newSize > block.Size
                        ? heap.TryGrowInPlace(pointer, (nuint)block.Size, (nuint)newSize, 16)
                        : heap.TryShrinkInPlace(pointer, (nuint)block.Size, (nuint)newSize, 16));
                if (resized)
                {
                    after[operation.Offset] = block with { Size = newSize, Filled = Math.Min(block.Filled, newSize) };
                }

                break;
            case OperationKind.Root:
                heap.Root = operation.Offset;
                break;
        }

        return after;
    }

    private enum OperationKind
    {
        Allocate,
        Free,
        Resize,
        Root,
    }

    private readonly record struct Operation(OperationKind Kind, long Offset, long Size, int Alignment, int Index);

    /// <summary>A live block of the model: the size it was last allocated or resized with, the bytes filled with its pattern, and the pattern's generation.</summary>
    private readonly record struct LiveBlock(long Size, long Filled, long Generation);

    private sealed class CrashPointException : Exception
    {
        public CrashPointException()
            : base("cut short by the test")
        {
        }
    }
}
