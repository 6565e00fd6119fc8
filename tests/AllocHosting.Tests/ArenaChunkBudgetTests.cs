using AllocHosting.Allocators;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;

namespace AllocHosting.Tests;

public sealed class ArenaChunkBudgetTests : IDisposable
{
    private const int ChunkSize = 16 * 1024;

    private readonly TestMeterFactory _meters = new();
    private readonly List<ArenaChunkBudget> _budgets = [];

    public void Dispose()
    {
        _budgets.ForEach(budget => budget.Dispose());
        _meters.Dispose();
    }

    [Fact]
    public void The_chunk_given_back_last_is_handed_out_first()
    {
        var (budget, _) = Create(chunks: 64);
        ArenaChunk a = budget.Take(0)!;
        ArenaChunk b = budget.Take(0)!;
        budget.Return(a, 0);
        budget.Return(b, 0);

        Assert.Same(b, budget.Take(0));
        Assert.Same(a, budget.Take(0));
    }

    [Fact]
    public void The_budget_caps_the_chunks_and_a_spent_budget_gives_none_under_Reject()
    {
        var (budget, source) = Create(chunks: 2);
        Assert.NotNull(budget.Take(0));
        Assert.NotNull(budget.Take(0));

        Assert.Null(budget.Take(0));
        Assert.Equal(2, source.ChunkCount);
        Assert.Equal(2, budget.ChunksInUse);
    }

    [Fact]
    public void A_chunk_idle_in_another_processors_slot_is_taken_before_the_budget_refuses()
    {
        var (budget, source) = Create(chunks: 1);
        ArenaChunk only = budget.Take(0)!;

        // The whole budget idles in the slot of another processor than the taker's.
        budget.Return(only, 1);

        Assert.Equal(1, source.ChunkCount);
        Assert.Equal(0, budget.ChunksInUse);
        Assert.Same(only, budget.Take(0));
        Assert.Equal(1, budget.ChunksInUse);
    }

    [Fact]
    public void A_spent_budget_is_logged_once_per_episode()
    {
        var logger = new FakeLogger<RequestArenaPool>();
        var (budget, _) = Create(chunks: 1, logger: logger);
        ArenaChunk held = budget.Take(0)!;

        for (int i = 0; i < 3; i++)
        {
            Assert.Null(budget.Take(0));
        }

        budget.Return(held, 0);
        held = budget.Take(0)!;
        Assert.Null(budget.Take(0));

        Assert.Equal(2, logger.Collector.GetSnapshot().Count(r => r.Id.Name == "ArenaBudgetSpent"));
    }

    [Fact]
    public async Task Under_Wait_a_rent_gets_the_chunk_another_request_gives_back_within_the_timeout()
    {
        var (budget, _) = Create(chunks: 1, policy: ArenaBudgetPolicy.Wait, waitTimeout: TimeSpan.FromSeconds(10));
        ArenaChunk held = budget.Take(0)!;

        var giver = Task.Run(async () =>
        {
            await Task.Delay(50);
            budget.Return(held, 1);
        });

        // An asynchronous rent waits without blocking; a synchronous one is refused at once meanwhile.
        ValueTask<ArenaChunk?> waiting = budget.TakeAsync(0, CancellationToken.None, CancellationToken.None);
        Assert.Null(budget.Take(0));
        Assert.Same(held, await waiting.AsTask().WaitAsync(TimeSpan.FromSeconds(5)));
        await giver;
    }

    [Fact]
    public void A_disposed_budget_refuses_to_take()
    {
        var (budget, _) = Create(chunks: 1);
        budget.Dispose();

        Assert.Throws<ObjectDisposedException>(() => budget.Take(0));
    }

    [Fact]
    public void A_large_chunk_counts_against_the_budget_at_its_class_size_and_comes_back_warm()
    {
        var (budget, source) = Create(chunks: 64, maxPerRequest: 8 * ChunkSize);
        Assert.Equal([2L * ChunkSize, 4L * ChunkSize, 8L * ChunkSize], budget.LargeClassSizes);

        ArenaChunk large = budget.TakeLarge((2 * ChunkSize) + 1)!;
        Assert.Equal(4 * ChunkSize, large.Capacity);
        Assert.Equal(4 * ChunkSize, budget.CommittedBytes);
        Assert.Equal(4 * ChunkSize, budget.BytesInUse);
        Assert.Equal(1, budget.ChunksInUse);

        large.Release(clear: true);
        budget.ReturnLarge(large);
        Assert.Equal(4 * ChunkSize, budget.CommittedBytes);   // kept, idle
        Assert.Equal(0, budget.BytesInUse);
        Assert.Equal(0, budget.ChunksInUse);
        Assert.Equal(1, budget.IdleLargeChunkCount);
        Assert.Same(large, budget.TakeLarge(3 * ChunkSize));
        Assert.Equal(1, source.LargeChunkCount);
    }

    [Fact]
    public void An_oversize_chunk_is_counted_while_held_and_unmapped_when_given_back()
    {
        var (budget, source) = Create(chunks: 64, maxPerRequest: 2 * ChunkSize);
        ArenaChunk oversize = budget.TakeLarge((5 * ChunkSize) + 1)!;
        Assert.Equal((5 * ChunkSize) + 4096, oversize.Capacity);
        Assert.Equal(oversize.Capacity, budget.CommittedBytes);

        oversize.Release(clear: true);
        budget.ReturnLarge(oversize);
        Assert.Equal(0, budget.CommittedBytes);
        Assert.Equal(0, source.LargeChunkCount);
        Assert.Equal(0, budget.IdleLargeChunkCount);
    }

    [Fact]
    public void Large_chunks_are_refused_when_the_budget_is_held_by_requests()
    {
        var (budget, _) = Create(chunks: 4, maxPerRequest: 4 * ChunkSize);
        Assert.NotNull(budget.Take(0));
        Assert.NotNull(budget.TakeLarge(2 * ChunkSize));

        Assert.Null(budget.TakeLarge(2 * ChunkSize));   // 1 + 2 chunks held: 2 more would exceed 4
        Assert.NotNull(budget.Take(0));                 // one pool chunk still fits
        Assert.Null(budget.Take(0));
        Assert.Equal(4 * ChunkSize, budget.CommittedBytes);
    }

    [Fact]
    public void Idle_pool_chunks_make_room_for_a_large_chunk_and_idle_large_chunks_for_pool_chunks()
    {
        var (budget, source) = Create(chunks: 4, maxPerRequest: 4 * ChunkSize);
        ArenaChunk[] pool = [budget.Take(0)!, budget.Take(0)!, budget.Take(0)!, budget.Take(0)!];
        foreach (ArenaChunk chunk in pool)
        {
            budget.Return(chunk, 0);
        }

        // The whole budget idles in pool chunks; a large rent disposes as many as it needs.
        ArenaChunk large = budget.TakeLarge(4 * ChunkSize)!;
        Assert.NotNull(large);
        Assert.Equal(0, source.ChunkCount);
        Assert.Equal(4 * ChunkSize, budget.CommittedBytes);

        large.Release(clear: true);
        budget.ReturnLarge(large);

        // And the other way round: the idle large chunk is disposed for a pool chunk.
        Assert.NotNull(budget.Take(0));
        Assert.Equal(0, source.LargeChunkCount);
        Assert.Equal(ChunkSize, budget.CommittedBytes);
    }

    [Fact]
    public async Task A_waiting_large_rent_gets_its_chunk_when_enough_memory_comes_back()
    {
        var (budget, _) = Create(chunks: 2, maxPerRequest: 2 * ChunkSize, policy: ArenaBudgetPolicy.Wait, waitTimeout: TimeSpan.FromSeconds(10));
        ArenaChunk held = budget.Take(0)!;

        Task<ArenaChunk?> waiting = budget.TakeLargeAsync(budget.LargeChunkSizeFor(2 * ChunkSize), CancellationToken.None, CancellationToken.None).AsTask();
        await Task.Delay(50);
        Assert.False(waiting.IsCompleted);

        budget.Return(held, 0);
        ArenaChunk? chunk = await waiting.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(2 * ChunkSize, chunk!.Capacity);
    }

    [Fact]
    public void Trimming_disposes_large_chunks_idle_through_an_interval_and_disposal_the_rest()
    {
        var (budget, source) = Create(chunks: 64, maxPerRequest: 4 * ChunkSize);
        ArenaChunk a = budget.TakeLarge(2 * ChunkSize)!, b = budget.TakeLarge(4 * ChunkSize)!;
        budget.ReturnLarge(a);
        budget.ReturnLarge(b);

        Assert.True(budget.TrimIdle(out int first, out _, out _));
        Assert.Equal(0, first);
        Assert.True(budget.TrimIdle(out int second, out _, out _));
        Assert.Equal(2, second);
        Assert.Equal(0, source.LargeChunkCount);
        Assert.Equal(0, budget.CommittedBytes);

        ArenaChunk c = budget.TakeLarge(2 * ChunkSize)!;
        budget.ReturnLarge(c);
        budget.Dispose();
        Assert.Equal(0, source.LargeChunkCount);
        Assert.Throws<ObjectDisposedException>(() => budget.TakeLarge(2 * ChunkSize));
    }

    [Fact]
    public void A_chunk_given_back_after_disposal_is_disposed()
    {
        var (budget, source) = Create(chunks: 64, maxPerRequest: 4 * ChunkSize);
        ArenaChunk held = budget.TakeLarge(2 * ChunkSize)!;
        budget.Dispose();

        budget.ReturnLarge(held);
        Assert.Equal(0, source.LargeChunkCount);
    }

    private (ArenaChunkBudget Budget, ArenaChunkSource Source) Create(
        int chunks, ILogger? logger = null, ArenaBudgetPolicy policy = ArenaBudgetPolicy.Reject, TimeSpan? waitTimeout = null, long maxPerRequest = ChunkSize)
    {
        var options = new SwitchableAllocatorOptions
        {
            InitialArenaSize = ChunkSize,
            MemoryBudget = chunks * ChunkSize,
            MaxArenaSizePerRequest = maxPerRequest,
            BudgetPolicy = policy,
            BudgetWaitTimeout = waitTimeout ?? TimeSpan.FromMilliseconds(100),
        };
        var source = ArenaChunkSource.ForThisMachine(options, NullLogger.Instance);
        var budget = new ArenaChunkBudget(options, source, new AllocHostingMetrics(_meters, new SwitchableAllocator()), logger ?? NullLogger.Instance);
        _budgets.Add(budget);
        return (budget, source);
    }
}
