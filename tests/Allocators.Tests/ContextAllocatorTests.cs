using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

public unsafe class ContextAllocatorTests
{
    private const nuint Capacity = 4096;

    // The tree allocator carves size-aligned blocks: a 64 KiB-aligned region is one 64 KiB block.
    private static readonly NativeMemorySource AlignedSource = new(64 * 1024);

    private static ContextAllocator CreateShortLived(out BumpAllocator bump, nuint capacity = Capacity)
    {
        bump = new BumpAllocator(NativeMemorySource.Shared, capacity);
        return ContextAllocator.ShortLived(bump);
    }

    [Fact]
    public void Short_lived_context_dispatches_to_its_bump_allocator()
    {
        using var context = CreateShortLived(out var bump);

        Assert.Equal(ContextAllocatorKind.ShortLived, context.Kind);
        Assert.Same(bump, context.Inner);
        byte* first = context.Allocate(1, 1);
        byte* second = context.Allocate(8, 8);
        Assert.True(first == (byte*)bump.Range.From);
        Assert.True(second == first + 8);
        Assert.Equal((nuint)16, bump.Used);
    }

    [Fact]
    public void Bump_semantics_come_through_the_context()
    {
        using var context = CreateShortLived(out var bump);
        byte* older = context.Allocate(16, 8);
        byte* recent = context.Allocate(16, 8);

        Assert.True(context.GrowingReallocate(recent, 16, 32, 8) == recent, "the most recent block grows in place");
        Assert.False(context.TryGrowInPlace(older, 16, 32, 8));
        byte* moved = context.GrowingReallocate(older, 16, 32, 8);
        Assert.True(moved != older);
        Assert.True(context.ShrinkingReallocate(moved, 32, 8, 8) == moved);
        Assert.True(context.TryShrinkInPlace(moved, 8, 4, 8));
        Assert.Equal((nuint)100, context.GetUsableSize(100, 8));
        context.Deallocate(moved, 4, 8);
        Assert.Equal((nuint)48, bump.Used);
    }

    [Fact]
    public void Reset_resets_the_inner_allocator()
    {
        using var context = CreateShortLived(out var bump);
        byte* first = context.Allocate(1000, 8);

        context.Reset();

        Assert.Equal((nuint)0, bump.Used);
        Assert.True(context.Allocate(Capacity, 1) == first);
    }

    [Fact]
    public void Statistics_are_the_inner_allocators_and_count_each_failure_once()
    {
        using var context = CreateShortLived(out var bump);
        byte* block = context.Allocate(100, 4);
        Assert.False(context.TryAllocate(Capacity, 1, out _));
        Assert.Throws<AllocatorExhaustedException>(() => context.Allocate(Capacity, 1));
        Assert.False(context.TryGrowingReallocate(block, 100, Capacity + 1, 4, out _));
        context.Deallocate(block, 100, 4);

        Assert.Equal(bump.Statistics, context.Statistics);
        var statistics = context.Statistics;
        Assert.Equal(3, statistics.FailureCount);
        Assert.Equal(1, statistics.AllocationCount);
        Assert.Equal(1, statistics.DeallocationCount);
        Assert.Equal(0, statistics.BytesInUse);
        Assert.Equal(100, statistics.PeakBytesInUse);
        Assert.Equal((long)Capacity, statistics.Capacity);
    }

    [Fact]
    public void Owns_and_Range_are_the_inner_allocators()
    {
        using var context = CreateShortLived(out var bump);

        Assert.Equal(bump.Range, context.Range);
        Assert.True(context.Owns((byte*)bump.Range.From));
        Assert.True(context.Owns((byte*)bump.Range.To - 1));
        Assert.False(context.Owns((byte*)bump.Range.To));
    }

    [Fact]
    public void Free_of_foreign_pointer_throws_and_changes_nothing()
    {
        using var context = CreateShortLived(out var bump);
        context.Allocate(32, 8);
        var before = context.Statistics;

        Assert.Throws<ArgumentException>(() => context.Deallocate((byte*)bump.Range.To + 64, 8, 8));

        Assert.Equal(before, context.Statistics);
        Assert.Equal((nuint)32, bump.Used);
    }

    [Fact]
    public void Exhaustion_message_names_the_context_kind()
    {
        using var context = CreateShortLived(out _);

        var error = Assert.Throws<AllocatorExhaustedException>(() => context.Allocate(Capacity + 1, 1));

        Assert.Equal("ContextAllocator(ShortLived)", error.AllocatorName);
    }

    [Fact]
    public void Dispose_disposes_the_inner_allocator()
    {
        var source = new NativeMemorySource();
        var context = ContextAllocator.ShortLived(new BumpAllocator(source, 4096));
        Assert.Equal(4096, source.BytesObtained);

        context.Dispose();
        context.Dispose();

        Assert.Equal(0, source.BytesObtained);
    }

    [Fact]
    public void Short_lived_factory_rejects_null() =>
        Assert.Throws<ArgumentNullException>(() => ContextAllocator.ShortLived(null!));

    // Model: AllocatorModel's list of live blocks (aligned, owned, disjoint, contents intact),
    // with resets, through the context; afterwards the whole capacity is one block again.
    [Fact]
    public void Random_operation_sequences_on_a_short_lived_context_match_the_live_block_model()
    {
        const nuint capacity = 32 * 1024;
        long steps = AllocatorModel.Run(
            new ModelSettings { ResetWeight = 1, Iterations = 60, MaxSteps = 120 },
            () => CreateShortLived(out _, capacity),
            context => context.Reset(),
            context =>
            {
                context.Reset();
                Assert.True(context.TryAllocate(capacity, 1, out _));
            });

        Assert.True(steps >= 2000, $"ran {steps} steps");
    }
    [Fact]
    public void Medium_lived_context_dispatches_to_its_bit_set_allocator()
    {
        using var context = ContextAllocator.MediumLived(new BitSetAllocator(NativeMemorySource.Shared, 64, 4096));
        var bitSet = Assert.IsType<BitSetAllocator>(context.Inner);

        Assert.Equal(ContextAllocatorKind.MediumLived, context.Kind);
        byte* first = context.Allocate(100, 8);
        byte* second = context.Allocate(10, 8);
        Assert.Equal((nuint)128, context.GetUsableSize(100, 8));
        Assert.Equal(bitSet.BlockCount - 3, bitSet.FreeBlockCount);
        Assert.True(context.Owns(first) && context.Range == bitSet.Range);

        // Bit set frees really return memory, unlike bump frees of older blocks.
        context.Deallocate(first, 100, 8);
        Assert.Equal(bitSet.BlockCount - 1, bitSet.FreeBlockCount);
        Assert.Throws<ArgumentException>(() => context.Deallocate(first, 100, 8));
        Assert.Equal(bitSet.BlockCount - 1, bitSet.FreeBlockCount);

        context.Reset();
        Assert.Equal(bitSet.BlockCount, bitSet.FreeBlockCount);
        Assert.Equal(0, context.Statistics.BytesInUse);
        _ = second;
    }

    [Fact]
    public void Long_lived_context_dispatches_to_its_tree_allocator_and_reset_recarves()
    {
        using var context = ContextAllocator.LongLived(new MultipleBinarySearchTreeAllocator(AlignedSource, 64 * 1024));
        var tree = Assert.IsType<MultipleBinarySearchTreeAllocator>(context.Inner);

        Assert.Equal(ContextAllocatorKind.LongLived, context.Kind);
        byte* block = context.Allocate(100, 16);
        Assert.Equal((nuint)128, context.GetUsableSize(100, 16));
        block = context.GrowingReallocate(block, 100, 1000, 16);
        Assert.True(context.Owns(block));
        Assert.Equal(1024, context.Statistics.BytesInUse);

        context.Reset();
        tree.Validate();
        Assert.Equal(0, context.Statistics.BytesInUse);
        Assert.True(context.TryAllocate(64 * 1024, 1, out _), "after a reset the whole region is one block again");
    }

    [Fact]
    public void Medium_and_long_lived_factories_reject_null()
    {
        Assert.Throws<ArgumentNullException>(() => ContextAllocator.MediumLived(null!));
        Assert.Throws<ArgumentNullException>(() => ContextAllocator.LongLived(null!));
    }

    // Model: the live-block model through a tree-backed context, with resets.
    [Fact]
    public void Random_operation_sequences_on_a_long_lived_context_match_the_live_block_model()
    {
        const nuint capacity = 64 * 1024;
        long steps = AllocatorModel.Run(
            new ModelSettings { ResetWeight = 1, Iterations = 40, MaxSteps = 100, MaxSize = 2048 },
            () => ContextAllocator.LongLived(new MultipleBinarySearchTreeAllocator(AlignedSource, capacity)),
            context => context.Reset(),
            context => Assert.True(context.TryAllocate(capacity, 1, out _)));

        Assert.True(steps >= 1000, $"ran {steps} steps");
    }

    public static TheoryData<string> ThreadSafeKinds => new() { "bump", "bitset", "tree" };

    // Model: blocks handed out to concurrent users never overlap and keep their contents, for each
    // thread-safe form, while another user of the same bump allocator rents through its concurrent path.
    [Theory]
    [MemberData(nameof(ThreadSafeKinds))]
    public void Thread_safe_context_never_hands_out_overlapping_blocks_to_concurrent_users(string kind)
    {
        const int Threads = 4;
        const int Rounds = 400;
        var sharedLock = new Lock();
        BumpAllocator? bump = null;
        using ContextAllocator context = kind switch
        {
            "bump" => ContextAllocator.ShortLived(bump = new BumpAllocator(NativeMemorySource.Shared, 4 << 20), threadSafe: true),
            "bitset" => ContextAllocator.MediumLived(new BitSetAllocator(NativeMemorySource.Shared, 64, 4 << 20), sharedLock),
            _ => ContextAllocator.LongLived(new MultipleBinarySearchTreeAllocator(AlignedSource, 4 << 20), sharedLock),
        };
        Assert.True(context.IsThreadSafe);

        var live = new System.Collections.Concurrent.ConcurrentBag<(nuint Address, nuint Size)>();
        int frees = 0, grows = 0;
        var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            var random = new Random(t);
            for (int i = 0; i < Rounds; i++)
            {
                nuint size = (nuint)random.Next(1, 600);
                byte fill = (byte)(t + 1);
                byte* p;
                if (bump is not null && i % 3 == 0)
                {
                    // Another user of the same arena, on the bump allocator's concurrent path.
                    Assert.True(bump.TryAllocateConcurrent(size, 8, out p));
                }
                else
                {
                    p = context.Allocate(size, 8);
                }

                new Span<byte>(p, (int)size).Fill(fill);
                if (i % 4 == 1)
                {
                    p = context.GrowingReallocate(p, size, size + 100, 8);
                    Interlocked.Increment(ref grows);
                    Assert.Equal(-1, new ReadOnlySpan<byte>(p, (int)size).IndexOfAnyExcept(fill));
                    size += 100;
                    new Span<byte>(p, (int)size).Fill(fill);
                }

                if (i % 5 == 2 && (bump is null || i % 3 != 0))
                {
                    context.Deallocate(p, size, 8);
                    Interlocked.Increment(ref frees);
                    continue;
                }

                live.Add(((nuint)p, size));
                Assert.Equal(-1, new ReadOnlySpan<byte>(p, (int)size).IndexOfAnyExcept(fill));
            }
        })).ToArray();
        Array.ForEach(workers, w => w.Start());
        Array.ForEach(workers, w => w.Join());

        var sorted = live.OrderBy(b => b.Address).ToArray();
        for (int i = 1; i < sorted.Length; i++)
        {
            Assert.True(sorted[i - 1].Address + sorted[i - 1].Size <= sorted[i].Address, "blocks overlap");
        }

        if (bump is not null)
        {
            // Concurrent frees are all counted (a concurrent bump context's growth always moves: a free each).
            Assert.Equal(frees + grows, context.Statistics.DeallocationCount);
        }
    }

    [Fact]
    public void Plain_factories_are_not_thread_safe()
    {
        using var bump = CreateShortLived(out _);
        Assert.False(bump.IsThreadSafe);
        using var bitSet = ContextAllocator.MediumLived(new BitSetAllocator(NativeMemorySource.Shared, 64, 4096));
        Assert.False(bitSet.IsThreadSafe);
    }
}
