using CsCheck;

namespace AllocHosting.Allocators.Tests;

// Model-based: random sequences of list operations, valid and refused ones, run on a NativeList<T>
// and on List<T> as the reference, over every kind of allocator.
public unsafe class NativeListPropertyTests
{
    private enum Operation
    {
        Add,
        AddRange,
        Insert,
        RemoveAt,
        Set,
        Clear,
        EnsureCapacity,
        TrimExcess,
    }

    // Index: negative stays negative (refused); otherwise taken modulo Count + 2, so that Count
    // (valid only for Insert) and Count + 1 (refused by all) come up often.
    private readonly record struct Step(Operation Operation, int Index, int Value, int Length);

    /// <summary>Three ints: a 12-byte element, so usable sizes are rarely a whole number of elements.</summary>
    public readonly record struct Triple(int A, int B, int C);

    private static readonly Gen<Step> Steps = Gen.Frequency(
        (30, Gen.Int.Select(v => new Step(Operation.Add, 0, v, 0))),
        (8, Gen.Select(Gen.Int, Gen.Int[0, 80], (v, n) => new Step(Operation.AddRange, 0, v, n))),
        (10, Gen.Select(Gen.Int[-2, 400], Gen.Int, (i, v) => new Step(Operation.Insert, i, v, 0))),
        (10, Gen.Int[-2, 400].Select(i => new Step(Operation.RemoveAt, i, 0, 0))),
        (8, Gen.Select(Gen.Int[-2, 400], Gen.Int, (i, v) => new Step(Operation.Set, i, v, 0))),
        (2, Gen.Const(new Step(Operation.Clear, 0, 0, 0))),
        (4, Gen.Int[-3, 3000].Select(n => new Step(Operation.EnsureCapacity, 0, 0, n))),
        (4, Gen.Const(new Step(Operation.TrimExcess, 0, 0, 0))));

    public static TheoryData<string> AllocatorNames => AllocatorFactories.NamesExcept("memorypool", "context-long", "mimalloc", "jemalloc", "rpmalloc");

    // Model: List<int>. After every step the NativeList has the model's elements in order, a
    // capacity of at least its count, and a refused step threw the exception List<T> throws (with
    // nothing changed). A step the allocator cannot serve (a bounded region is full) must throw
    // AllocatorExhaustedException and leave the list as it was; the model then skips the step.
    // Disposing gives back every byte the list took (to allocators that reuse memory). In-place growth is on or off per sequence.
    [Theory]
    [MemberData(nameof(AllocatorNames))]
    public void Random_operations_on_ints_match_List(string allocatorName) =>
        RunAgainstList(() => AllocatorFactories.Create(allocatorName), value => value);

    [Theory]
    [InlineData("bump")]
    [InlineData("bitset")]
    [InlineData("tree")]
    [InlineData("threadlocal")]
    [InlineData("native-tracked")]
    public void Random_operations_on_12_byte_elements_match_List(string allocatorName) =>
        RunAgainstList(() => AllocatorFactories.Create(allocatorName), value => new Triple(value, ~value, value * 3));

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void Random_operations_over_mimalloc_match_List() =>
        RunAgainstList(() => ExternalNativeAllocator.Load(NativeAllocatorLibrary.Mimalloc, trackOwnership: true), value => value);

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void Random_operations_over_jemalloc_match_List() =>
        RunAgainstList(() => ExternalNativeAllocator.Load(NativeAllocatorLibrary.Jemalloc, trackOwnership: true), value => value);

    private static void RunAgainstList<T>(Func<AllocatorBase> createAllocator, Func<int, T> element)
        where T : unmanaged
    {
        long executed = 0;
        long refused = 0;
        Gen.Select(Gen.Bool, Steps.Array[1, 120]).Sample(
            (growInPlace, steps) =>
            {
                using AllocatorBase allocator = createAllocator();
                long before = allocator.Statistics.BytesInUse;
                var model = new List<T>();
                using (var list = new NativeList<T>(allocator, growInPlace: growInPlace))
                {
                    foreach (Step step in steps)
                    {
                        Type? expected = Catch(() => Apply(model, step, element, dryRun: true));
                        Type? actual = Catch(() => Apply(list, step, element));
                        if (actual == typeof(AllocatorExhaustedException) && expected is null)
                        {
                            // The allocator is full; the list must be as it was.
                            AssertSame(model, list);
                            continue;
                        }

                        Assert.Equal(expected, actual);
                        if (expected is null)
                        {
                            Apply(model, step, element, dryRun: false);
                        }
                        else
                        {
                            refused++;
                        }

                        AssertSame(model, list);
                        executed++;
                    }
                }

                if (allocator is not BumpAllocator && !(allocator is ContextAllocator { Kind: ContextAllocatorKind.ShortLived }))
                {
                    // A bump allocator gives back only its most recent block; every other allocator gives back all.
                    Assert.Equal(before, allocator.Statistics.BytesInUse);
                }
            },
            iter: 60,
            threads: 1);
        Assert.True(executed >= 1000, $"only {executed} steps ran");
        Assert.True(refused > 0, "no step was refused");
    }

    private static Type? Catch(Action action)
    {
        try
        {
            action();
            return null;
        }
        catch (Exception error)
        {
            return error.GetType();
        }
    }

    private static int IndexFor(Step step, int count) => step.Index < 0 ? step.Index : step.Index % (count + 2);

    // The reference. With dryRun the operation only checks its arguments (and throws as List<T>
    // does), so that the model changes only once the NativeList has succeeded.
    private static void Apply<T>(List<T> model, Step step, Func<int, T> element, bool dryRun)
    {
        List<T> target = dryRun ? [.. model] : model;
        int index = IndexFor(step, model.Count);
        switch (step.Operation)
        {
            case Operation.Add:
                target.Add(element(step.Value));
                break;
            case Operation.AddRange:
                target.AddRange(Range(step, element));
                break;
            case Operation.Insert:
                target.Insert(index, element(step.Value));
                break;
            case Operation.RemoveAt:
                target.RemoveAt(index);
                break;
            case Operation.Set:
                target[index] = element(step.Value);
                break;
            case Operation.Clear:
                target.Clear();
                break;
            case Operation.EnsureCapacity:
                target.EnsureCapacity(step.Length);
                break;
            case Operation.TrimExcess:
                target.TrimExcess();
                break;
        }
    }

    private static void Apply<T>(NativeList<T> list, Step step, Func<int, T> element)
        where T : unmanaged
    {
        int index = IndexFor(step, list.Count);
        switch (step.Operation)
        {
            case Operation.Add:
                list.Add(element(step.Value));
                break;
            case Operation.AddRange:
                list.AddRange(Range(step, element));
                break;
            case Operation.Insert:
                list.Insert(index, element(step.Value));
                break;
            case Operation.RemoveAt:
                list.RemoveAt(index);
                break;
            case Operation.Set:
                list[index] = element(step.Value);
                break;
            case Operation.Clear:
                list.Clear();
                break;
            case Operation.EnsureCapacity:
                int capacity = list.EnsureCapacity(step.Length);
                Assert.True(capacity >= step.Length, $"EnsureCapacity({step.Length}) gave {capacity}");
                break;
            case Operation.TrimExcess:
                list.TrimExcess();
                break;
        }
    }

    private static T[] Range<T>(Step step, Func<int, T> element) =>
        Enumerable.Range(0, step.Length).Select(i => element(step.Value + i)).ToArray();

    private static void AssertSame<T>(List<T> model, NativeList<T> list)
        where T : unmanaged
    {
        Assert.Equal(model.Count, list.Count);
        Assert.True(list.Capacity >= list.Count, $"capacity {list.Capacity} below count {list.Count}");
        Assert.Equal(model, list.AsSpan().ToArray());
    }
}
