using System.Runtime.InteropServices;
using CsCheck;

namespace AllocHosting.Allocators.Tests.Model;

/// <summary>The kinds of step a model-based test draws.</summary>
public enum ModelOperation
{
    Allocate,
    Free,
    Grow,
    Shrink,
    Reset,

    /// <summary>A free with bad input (<see cref="ModelStep.Bad"/>): refused, nothing changes.</summary>
    BadFree,

    /// <summary>A growing reallocation (or a grow in place) with bad input: refused, nothing changes.</summary>
    BadGrow,

    /// <summary>A shrinking reallocation (or a shrink in place) with bad input: refused, nothing changes.</summary>
    BadShrink,

    /// <summary>A growing reallocation of a live block to a size no allocator can serve: exhaustion, the block stays live.</summary>
    HugeGrow,
}

/// <summary>One drawn step: the operation plus raw numbers the runner turns into a size, an alignment and a live block.</summary>
public readonly record struct ModelStep(ModelOperation Operation, int Size, int AlignmentLog2, int Pick, BadInput Bad = BadInput.None)
{
    public override string ToString() => Bad == BadInput.None
        ? $"{Operation}(size {Size}, align 2^{AlignmentLog2}, pick {Pick})"
        : $"{Operation}({Bad}, size {Size}, pick {Pick})";
}

/// <summary>How a model-based test draws steps for one allocator.</summary>
public sealed record ModelSettings
{
    public int MaxSize { get; init; } = 4096;
    public int MaxAlignmentLog2 { get; init; } = 6;
    public int AllocateWeight { get; init; } = 5;
    public int FreeWeight { get; init; } = 3;
    public int GrowWeight { get; init; } = 1;
    public int ShrinkWeight { get; init; } = 1;

    /// <summary>Zero for allocators without a reset.</summary>
    public int ResetWeight { get; init; }

    /// <summary>Weight of each of <see cref="ModelOperation.BadFree"/>, <see cref="ModelOperation.BadGrow"/> and <see cref="ModelOperation.BadShrink"/>; zero (none drawn) unless a test asks.</summary>
    public int BadInputWeight { get; init; }

    /// <summary>The bad inputs the allocator refuses and the model draws; the others are tolerated by the allocator's contract and not drawn.</summary>
    public BadInput RefusedBadInputs { get; init; } = BadInput.All;

    /// <summary>Weight of <see cref="ModelOperation.HugeGrow"/>; zero unless a test asks.</summary>
    public int HugeGrowWeight { get; init; }

    public int MinSteps { get; init; } = 1;
    public int MaxSteps { get; init; } = 120;

    /// <summary>Sequences sampled: with the step counts, a few thousand operations per allocator at least, enough to reach the rarer paths (splits, merges, moves, exhaustion).</summary>
    public long Iterations { get; init; } = 200;
}

/// <summary>
/// A model-based test of any <see cref="IAllocator"/>. The reference model is a list of live blocks
/// (address, size, alignment, fill byte); every drawn step is applied to the allocator and to the model,
/// and after every step the runner checks:
/// <list type="bullet">
/// <item>every live address is aligned and owned by the allocator;</item>
/// <item>no two live blocks overlap;</item>
/// <item>every live block still holds its fill pattern (contents survive other allocations and reallocation);</item>
/// <item>statistics never report a negative number of bytes in use, and (where the allocator counts every
/// block it hands out, see <see cref="Runner.CountsEveryLiveBlock"/>) never fewer bytes than the live blocks hold.</item>
/// </list>
/// At the end of a sequence every block is freed (or the allocator reset) and the test's
/// <c>afterAllFreed</c> check runs, typically "full capacity is available again".
/// Exhaustion is allowed at any time: a refused request simply leaves the model unchanged.
/// <para>
/// Bad input (issue 11, "Bad input, every allocator"): with <see cref="ModelSettings.BadInputWeight"/>
/// the runner also draws frees, grows and shrinks of a wrong size, an interior pointer, a pointer
/// already freed and a foreign pointer (the kinds of <see cref="ModelSettings.RefusedBadInputs"/>),
/// and with <see cref="ModelSettings.HugeGrowWeight"/> grows to sizes no allocator can serve. A bad
/// step must throw <see cref="ArgumentException"/>, a huge grow must report exhaustion (<see langword="false"/>
/// from the <c>Try</c> form, <see cref="OutOfMemoryException"/> from the throwing one); either way the
/// statistics are unchanged (but for the failure count of a huge grow), every live block is still
/// owned, in place and intact, and the sequence goes on with the same live blocks, which the final
/// <see cref="Runner.FreeAll"/> proves freeable.
/// </para>
/// </summary>
public static unsafe class AllocatorModel
{
    public static Gen<ModelStep> Steps(ModelSettings settings) =>
        Gen.Frequency(
            (settings.AllocateWeight, Gen.Select(Gen.Int[1, settings.MaxSize], Gen.Int[0, settings.MaxAlignmentLog2], Gen.Int[0, 1 << 20],
                (s, a, p) => new ModelStep(ModelOperation.Allocate, s, a, p))),
            (settings.FreeWeight, Gen.Int[0, 1 << 20].Select(p => new ModelStep(ModelOperation.Free, 0, 0, p))),
            (settings.GrowWeight, Gen.Select(Gen.Int[1, settings.MaxSize], Gen.Int[0, 1 << 20], (s, p) => new ModelStep(ModelOperation.Grow, s, 0, p))),
            (settings.ShrinkWeight, Gen.Select(Gen.Int[1, settings.MaxSize], Gen.Int[0, 1 << 20], (s, p) => new ModelStep(ModelOperation.Shrink, s, 0, p))),
            (Math.Max(settings.ResetWeight, 0), Gen.Const(new ModelStep(ModelOperation.Reset, 0, 0, 0))),
            (BadWeight(settings), BadSteps(settings, ModelOperation.BadFree)),
            (BadWeight(settings), BadSteps(settings, ModelOperation.BadGrow)),
            (BadWeight(settings), BadSteps(settings, ModelOperation.BadShrink)),
            (Math.Max(settings.HugeGrowWeight, 0), Gen.Int[0, 1 << 20].Select(p => new ModelStep(ModelOperation.HugeGrow, 0, 0, p))));

    // No bad step is drawn when the allocator refuses none.
    private static int BadWeight(ModelSettings settings) =>
        settings.RefusedBadInputs == BadInput.None ? 0 : Math.Max(settings.BadInputWeight, 0);

    private static Gen<ModelStep> BadSteps(ModelSettings settings, ModelOperation operation)
    {
        BadInput[] kinds = [.. Enum.GetValues<BadInput>().Where(k => k is not (BadInput.None or BadInput.All) && settings.RefusedBadInputs.HasFlag(k))];
        if (kinds.Length == 0)
        {
            kinds = [BadInput.ForeignPointer];   // never drawn: the weight is zero
        }

        return Gen.Select(Gen.Int[1, settings.MaxSize], Gen.Int[0, kinds.Length - 1], Gen.Int[0, 1 << 20],
            (s, k, p) => new ModelStep(operation, s, 0, p, kinds[k]));
    }

    /// <summary>Samples sequences of steps and runs each against a fresh allocator.</summary>
    /// <param name="settings">How steps are drawn.</param>
    /// <param name="create">Creates a fresh allocator for one sequence.</param>
    /// <param name="reset">Releases everything at once (for allocators with a reset); required when <see cref="ModelSettings.ResetWeight"/> is positive.</param>
    /// <param name="afterAllFreed">Runs once every block was freed; asserts the allocator is whole again.</param>
    /// <returns>The total number of steps executed, so a test can show it ran enough.</returns>
    public static long Run<TAllocator>(
        ModelSettings settings,
        Func<TAllocator> create,
        Action<TAllocator>? reset = null,
        Action<TAllocator>? afterAllFreed = null)
        where TAllocator : IAllocator, IDisposable
    {
        if (settings.ResetWeight > 0 && reset is null)
        {
            throw new ArgumentException("A reset action is needed when resets are drawn.", nameof(reset));
        }

        long executed = 0;
        Steps(settings).Array[settings.MinSteps, settings.MaxSteps].Sample(
            steps =>
            {
                using var allocator = create();
                var runner = new Runner(allocator);
                foreach (var step in steps)
                {
                    runner.Apply(step, reset is null ? null : () => reset(allocator));
                    runner.CheckInvariants();
                }

                Interlocked.Add(ref executed, steps.Length);

                // "Bytes in use covers every live block" is checked by CheckInvariants after every step,
                // while blocks are live; after FreeAll LiveBytes is 0, so only the sign is left to check.
                runner.FreeAll();
                Assert.Empty(runner.Live);
                Assert.True(allocator.Statistics.BytesInUse >= 0, "bytes in use is never negative");
                afterAllFreed?.Invoke(allocator);
            },
            iter: settings.Iterations,
            threads: 1);
        return executed;
    }

    /// <summary>Applies steps to one allocator and keeps the reference model.</summary>
    /// <remarks>Messages are formatted only when a check fails (an exception's text costs milliseconds: formatted on every step, it would dominate the stress runs).</remarks>
    public sealed class Runner(IAllocator allocator)
    {
        // Memory no allocator handed out: the foreign pointers of the bad steps point into it. One
        // buffer for the process (never freed, never written by the allocators: they must refuse it).
        private const int ForeignLength = 64 * 1024;
        private static readonly nuint Foreign = (nuint)NativeMemory.AlignedAlloc(ForeignLength, 4096);

        // Hugely more than any machine maps: exhaustion for every allocator.
        private static readonly nuint[] HugeSizes = [Allocator.MaximumSize, (nuint)1 << 62, (nuint)1 << 48];

        private readonly List<Block> _live = [];

        // Blocks freed lately (by Free, by a move, by Reset), the most recent last: the double frees.
        private readonly List<Block> _freed = [];
        private byte _nextFill = 1;

        public IReadOnlyList<Block> Live => _live;

        /// <summary>
        /// Whether the allocator's <see cref="AllocatorStatistics.BytesInUse"/> covers every block it
        /// handed out. Not so for a <see cref="SwitchableAllocator"/>: its statistics are the global and
        /// thread-local allocators' only, so blocks served by a context allocator are not counted there
        /// (the context allocator reports them itself). Nor for an <see cref="ExternalNativeAllocator"/>
        /// loaded with <c>countStatistics: false</c>, which counts only failures.
        /// </summary>
        public bool CountsEveryLiveBlock { get; } =
            allocator is not SwitchableAllocator and not ExternalNativeAllocator { CountsStatistics: false };

        /// <summary>The sum of the sizes of the live blocks.</summary>
        public long LiveBytes => _live.Sum(b => (long)b.Size);

        public void Apply(ModelStep step, Action? reset)
        {
            switch (step.Operation)
            {
                case ModelOperation.Allocate:
                    Allocate((nuint)step.Size, (nuint)1 << step.AlignmentLog2);
                    break;
                case ModelOperation.Free when _live.Count > 0:
                    Free(step.Pick % _live.Count);
                    break;
                case ModelOperation.Grow when _live.Count > 0:
                    Grow(step.Pick % _live.Count, (nuint)step.Size);
                    break;
                case ModelOperation.Shrink when _live.Count > 0:
                    Shrink(step.Pick % _live.Count, (nuint)step.Size);
                    break;
                case ModelOperation.Reset when reset is not null:
                    reset();
                    foreach (var block in _live)
                    {
                        NoteFreed(block);
                    }

                    _live.Clear();
                    break;
                case ModelOperation.BadFree or ModelOperation.BadGrow or ModelOperation.BadShrink:
                    ApplyBad(step);
                    break;
                case ModelOperation.HugeGrow when _live.Count > 0:
                    HugeGrow(step.Pick % _live.Count, step.Pick);
                    break;
            }
        }

        public void Allocate(nuint size, nuint alignment)
        {
            if (!allocator.TryAllocate(size, alignment, out byte* pointer))
            {
                return;
            }

            var block = new Block((nuint)pointer, size, alignment, NextFill(), allocator.GetUsableSize(size, alignment));
            block.Fill();
            _live.Add(block);
        }

        public void Free(int index)
        {
            var block = _live[index];
            block.AssertIntact();
            allocator.Deallocate((byte*)block.Address, block.Size, block.Alignment);
            _live.RemoveAt(index);
            NoteFreed(block);
        }

        public void Grow(int index, nuint extra)
        {
            var block = _live[index];
            nuint newSize = block.Size + extra;
            if (!allocator.TryGrowingReallocate((byte*)block.Address, block.Size, newSize, block.Alignment, out byte* moved))
            {
                block.AssertIntact();
                return;
            }

            var grown = block with { Address = (nuint)moved, Size = newSize, Capacity = CapacityAfterResize(block, (nuint)moved, newSize) };
            Assert.True(Allocator.IsAligned(grown.Address, grown.Alignment), "a grown block keeps its alignment");
            new Block(grown.Address, block.Size, block.Alignment, block.FillByte).AssertIntact();
            grown.Fill();
            _live[index] = grown;
            NoteMoved(block, grown.Address);
        }

        public void Shrink(int index, nuint by)
        {
            var block = _live[index];
            if (block.Size <= 1)
            {
                return;
            }

            nuint newSize = Math.Max(1, block.Size - Math.Min(by, block.Size - 1));
            byte* moved = allocator.ShrinkingReallocate((byte*)block.Address, block.Size, newSize, block.Alignment);
            var shrunk = block with { Address = (nuint)moved, Size = newSize, Capacity = CapacityAfterResize(block, (nuint)moved, newSize) };
            Assert.True(Allocator.IsAligned(shrunk.Address, shrunk.Alignment), "a shrunk block keeps its alignment");
            shrunk.AssertIntact();
            _live[index] = shrunk;
            NoteMoved(block, shrunk.Address);
        }

        public void FreeAll()
        {
            while (_live.Count > 0)
            {
                Free(_live.Count - 1);
            }
        }

        public void CheckInvariants()
        {
            var sorted = _live.OrderBy(b => b.Address).ToArray();
            for (int i = 0; i < sorted.Length; i++)
            {
                var block = sorted[i];
                if (!Allocator.IsAligned(block.Address, block.Alignment))
                {
                    Assert.Fail($"block at 0x{block.Address:X} is aligned to {block.Alignment}");
                }
                if (!allocator.Owns((byte*)block.Address))
                {
                    Assert.Fail($"the allocator owns its block at 0x{block.Address:X}");
                }
                if (i > 0)
                {
                    var previous = sorted[i - 1];
                    if (previous.Address + previous.Size > block.Address)
                    {
                        Assert.Fail($"blocks at 0x{previous.Address:X}+{previous.Size} and 0x{block.Address:X} overlap");
                    }
                }

                block.AssertIntact();
            }

            Assert.True(allocator.Statistics.BytesInUse >= 0, "bytes in use is never negative");
            long inUse = allocator.Statistics.BytesInUse;
            if (CountsEveryLiveBlock && inUse < LiveBytes)
            {
                Assert.Fail($"bytes in use ({inUse}) covers the {LiveBytes} bytes of the {_live.Count} live blocks");
            }
        }

        /// <summary>
        /// Grows a live block to a size no allocator can serve: the <c>Try</c> form returns
        /// <see langword="false"/>, the throwing form throws an <see cref="OutOfMemoryException"/>
        /// (<see cref="AllocatorExhaustedException"/>); the block stays live, in place and intact,
        /// and nothing but the failure count changes.
        /// </summary>
        public void HugeGrow(int index, int pick)
        {
            var block = _live[index];
            nuint huge = HugeSizes[pick % HugeSizes.Length];
            AllocatorStatistics before = allocator.Statistics;
            if ((pick & 8) == 0)
            {
                byte* moved = null;
                bool grown = true;
                Exception? error = Record.Exception(() => grown = allocator.TryGrowingReallocate((byte*)block.Address, block.Size, huge, block.Alignment, out moved));
                if (error is not null)
                {
                    Assert.Fail($"TryGrowingReallocate({block.Size} -> {huge}) of the block at 0x{block.Address:X} threw {error}");
                }
                Assert.False(grown, $"TryGrowingReallocate({block.Size} -> {huge}) succeeded");
                Assert.True(moved == null, "a refused grow returns no pointer");
            }
            else
            {
                Exception? error = Record.Exception(() => allocator.GrowingReallocate((byte*)block.Address, block.Size, huge, block.Alignment));
                if (error is not OutOfMemoryException)
                {
                    Assert.Fail($"GrowingReallocate({block.Size} -> {huge}) of the block at 0x{block.Address:X} threw {error?.GetType().Name ?? "nothing"}: {error}");
                }
            }

            AssertUnchanged(before, allowFailure: true, $"a refused grow to {huge} bytes");
        }

        /// <summary>Applies one bad step (if the model has a block to make it of): it must be refused with an <see cref="ArgumentException"/> and change nothing.</summary>
        public void ApplyBad(ModelStep step)
        {
            if (!TryMakeBad(step, out BadCall call))
            {
                return;
            }

            byte* pointer = (byte*)call.Address;
            nuint size = call.Size;
            nuint alignment = call.Alignment;
            bool inPlace = (step.Pick & 16) != 0;
            string what;
            Action action;
            switch (step.Operation)
            {
                case ModelOperation.BadFree:
                    what = $"Deallocate(0x{call.Address:X}, {size}, {alignment})";
                    action = () => allocator.Deallocate(pointer, size, alignment);
                    break;
                case ModelOperation.BadGrow:
                    nuint larger = size + (nuint)step.Size;
                    what = $"{(inPlace ? "TryGrowInPlace" : "TryGrowingReallocate")}(0x{call.Address:X}, {size} -> {larger}, {alignment})";
                    action = inPlace
                        ? () => allocator.TryGrowInPlace(pointer, size, larger, alignment)
                        : () => allocator.TryGrowingReallocate(pointer, size, larger, alignment, out _);
                    break;
                default:
                    if (size < 2)
                    {
                        return;
                    }

                    nuint smaller = 1 + ((nuint)step.Size % (size - 1));
                    what = $"{(inPlace ? "TryShrinkInPlace" : "ShrinkingReallocate")}(0x{call.Address:X}, {size} -> {smaller}, {alignment})";
                    action = inPlace
                        ? () => allocator.TryShrinkInPlace(pointer, size, smaller, alignment)
                        : () => allocator.ShrinkingReallocate(pointer, size, smaller, alignment);
                    break;
            }

            AllocatorStatistics before = allocator.Statistics;
            Exception? error = Record.Exception(action);
            if (error is not ArgumentException)
            {
                Assert.Fail($"{what}, {step.Bad} ({call.Description}), must throw ArgumentException, but {(error is null ? "it was accepted" : $"threw {error}")}");
            }
            AssertUnchanged(before, allowFailure: false, $"the refused {what} ({step.Bad})");
        }

        // Turns a drawn bad step into a call's pointer, size and alignment; false when the model has nothing to make it of.
        private bool TryMakeBad(ModelStep step, out BadCall call)
        {
            call = default;
            int pick = step.Pick;
            if (step.Bad == BadInput.ForeignPointer)
            {
                nuint offset = (nuint)(pick % 64) * 64;
                nuint size = Math.Min((nuint)step.Size, ForeignLength - offset);
                call = new BadCall(Foreign + offset, size, 8, "memory the allocator never handed out");
                return true;
            }

            if (step.Bad == BadInput.FreedPointer)
            {
                // From a drawn one on, the first freed block that no live block overlaps.
                for (int i = 0; i < _freed.Count; i++)
                {
                    var freed = _freed[(i + pick) % _freed.Count];
                    if (!_live.Any(b => b.Address < freed.Address + freed.Size && freed.Address < b.Address + b.Size))
                    {
                        call = new BadCall(freed.Address, freed.Size, freed.Alignment, "already freed");
                        return true;
                    }
                }

                return false;
            }

            if (_live.Count == 0)
            {
                return false;
            }

            var block = _live[pick % _live.Count];
            switch (step.Bad)
            {
                case BadInput.LargerSize:
                    call = new BadCall(block.Address, block.Capacity + (nuint)step.Size, block.Alignment, $"a block of {block.Size} bytes, usable {block.Capacity}");
                    return true;
                case BadInput.SmallerSize when block.Size >= 2:
                    // Smaller in a way the allocator can see: a size whose usable size is below the
                    // block's (a size of the same usable size is as good as the block's own, as
                    // IAllocator documents); blocks in the smallest unit have none.
                    nuint usable = allocator.GetUsableSize(block.Size, block.Alignment);
                    nuint smaller = block.Size - 1 - ((nuint)(pick >> 5) % (block.Size - 1));
                    if (allocator.GetUsableSize(smaller, block.Alignment) >= usable)
                    {
                        smaller = 1;
                        if (allocator.GetUsableSize(smaller, block.Alignment) >= usable)
                        {
                            return false;
                        }
                    }

                    call = new BadCall(block.Address, smaller, block.Alignment, $"a block of {block.Size} bytes, usable {usable}");
                    return true;
                case BadInput.WrongAlignment:
                    nuint other = (pick & 32) != 0 || block.Alignment == 1 ? block.Alignment * 2 : block.Alignment / 2;
                    call = new BadCall(block.Address, block.Size, other, $"a block aligned to {block.Alignment}");
                    return true;
                case BadInput.InteriorPointer when block.Size >= 2:
                    nuint inside = 1 + ((nuint)(pick >> 5) % (block.Size - 1));
                    call = new BadCall(block.Address + inside, block.Size - inside, block.Alignment, $"{inside} bytes into a block of {block.Size}");
                    return true;
                default:
                    return false;
            }
        }

        private void AssertUnchanged(AllocatorStatistics before, bool allowFailure, string what)
        {
            AllocatorStatistics after = allocator.Statistics;
            if (allowFailure)
            {
                after = after with { FailureCount = before.FailureCount };
            }

            if (before != after)
            {
                Assert.Fail($"{what} changed the statistics: before {before}, after {after}");
            }
            CheckInvariants();
        }

        // The usable size a resized block may have: at least the usable size of its new size, and
        // (in place) whatever it had before, which the allocator may keep.
        private nuint CapacityAfterResize(Block block, nuint address, nuint newSize)
        {
            nuint usable = allocator.GetUsableSize(newSize, block.Alignment);
            return address == block.Address ? Math.Max(usable, block.Capacity) : usable;
        }

        private void NoteMoved(Block block, nuint newAddress)
        {
            if (newAddress != block.Address)
            {
                NoteFreed(block);
            }
        }

        private void NoteFreed(Block block)
        {
            _freed.Add(block);
            if (_freed.Count > 16)
            {
                _freed.RemoveAt(0);
            }
        }

        private byte NextFill()
        {
            byte fill = _nextFill;
            _nextFill = (byte)(_nextFill == 255 ? 1 : _nextFill + 1);
            return fill;
        }
    }

    /// <summary>The arguments of a bad call, and what makes them bad (for messages).</summary>
    private readonly record struct BadCall(nuint Address, nuint Size, nuint Alignment, string Description);

    /// <summary>
    /// A live block of the model, filled with one byte value. <paramref name="Capacity"/> is the
    /// largest size the allocator may treat the block as having (its usable size, kept over in-place
    /// resizes): a size above it is wrong for every allocator.
    /// </summary>
    public readonly record struct Block(nuint Address, nuint Size, nuint Alignment, byte FillByte, nuint Capacity = 0)
    {
        public void Fill() => new Span<byte>((void*)Address, checked((int)Size)).Fill(FillByte);

        public void AssertIntact()
        {
            var span = new ReadOnlySpan<byte>((void*)Address, checked((int)Size));
            int bad = span.IndexOfAnyExcept(FillByte);
            if (bad >= 0)
            {
                Assert.Fail($"block at 0x{Address:X} of {Size} bytes lost its contents at offset {bad}");
            }
        }
    }
}
