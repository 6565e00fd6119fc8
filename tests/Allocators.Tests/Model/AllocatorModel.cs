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
}

/// <summary>One drawn step: the operation plus raw numbers the runner turns into a size, an alignment and a live block.</summary>
public readonly record struct ModelStep(ModelOperation Operation, int Size, int AlignmentLog2, int Pick)
{
    public override string ToString() => $"{Operation}(size {Size}, align 2^{AlignmentLog2}, pick {Pick})";
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
            (Math.Max(settings.ResetWeight, 0), Gen.Const(new ModelStep(ModelOperation.Reset, 0, 0, 0))));

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
    public sealed class Runner(IAllocator allocator)
    {
        private readonly List<Block> _live = [];
        private byte _nextFill = 1;

        public IReadOnlyList<Block> Live => _live;

        /// <summary>
        /// Whether the allocator's <see cref="AllocatorStatistics.BytesInUse"/> covers every block it
        /// handed out. Not so for a <see cref="SwitchableAllocator"/>: its statistics are the global and
        /// thread-local allocators' only, so blocks served by a context allocator are not counted there
        /// (the context allocator reports them itself).
        /// </summary>
        public bool CountsEveryLiveBlock { get; } = allocator is not SwitchableAllocator;

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
                    _live.Clear();
                    break;
            }
        }

        public void Allocate(nuint size, nuint alignment)
        {
            if (!allocator.TryAllocate(size, alignment, out byte* pointer))
            {
                return;
            }

            var block = new Block((nuint)pointer, size, alignment, NextFill());
            block.Fill();
            _live.Add(block);
        }

        public void Free(int index)
        {
            var block = _live[index];
            block.AssertIntact();
            allocator.Deallocate((byte*)block.Address, block.Size, block.Alignment);
            _live.RemoveAt(index);
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

            var grown = block with { Address = (nuint)moved, Size = newSize };
            Assert.True(Allocator.IsAligned(grown.Address, grown.Alignment), "a grown block keeps its alignment");
            new Block(grown.Address, block.Size, block.Alignment, block.FillByte).AssertIntact();
            grown.Fill();
            _live[index] = grown;
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
            var shrunk = block with { Address = (nuint)moved, Size = newSize };
            Assert.True(Allocator.IsAligned(shrunk.Address, shrunk.Alignment), "a shrunk block keeps its alignment");
            shrunk.AssertIntact();
            _live[index] = shrunk;
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
                Assert.True(Allocator.IsAligned(block.Address, block.Alignment), $"block at 0x{block.Address:X} is aligned to {block.Alignment}");
                Assert.True(allocator.Owns((byte*)block.Address), $"the allocator owns its block at 0x{block.Address:X}");
                if (i > 0)
                {
                    var previous = sorted[i - 1];
                    Assert.True(previous.Address + previous.Size <= block.Address, $"blocks at 0x{previous.Address:X}+{previous.Size} and 0x{block.Address:X} overlap");
                }

                block.AssertIntact();
            }

            Assert.True(allocator.Statistics.BytesInUse >= 0, "bytes in use is never negative");
            long inUse = allocator.Statistics.BytesInUse;
            Assert.True(!CountsEveryLiveBlock || inUse >= LiveBytes, $"bytes in use ({inUse}) covers the {LiveBytes} bytes of the {_live.Count} live blocks");
        }

        private byte NextFill()
        {
            byte fill = _nextFill;
            _nextFill = (byte)(_nextFill == 255 ? 1 : _nextFill + 1);
            return fill;
        }
    }

    /// <summary>A live block of the model, filled with one byte value.</summary>
    public readonly record struct Block(nuint Address, nuint Size, nuint Alignment, byte FillByte)
    {
        public void Fill() => new Span<byte>((void*)Address, checked((int)Size)).Fill(FillByte);

        public void AssertIntact()
        {
            var span = new ReadOnlySpan<byte>((void*)Address, checked((int)Size));
            int bad = span.IndexOfAnyExcept(FillByte);
            Assert.True(bad < 0, $"block at 0x{Address:X} of {Size} bytes lost its contents at offset {bad}");
        }
    }
}
