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

        Assert.Same(held, budget.Take(0));
        await giver;
    }

    [Fact]
    public void A_disposed_budget_refuses_to_take()
    {
        var (budget, _) = Create(chunks: 1);
        budget.Dispose();

        Assert.Throws<ObjectDisposedException>(() => budget.Take(0));
    }

    private (ArenaChunkBudget Budget, ArenaChunkSource Source) Create(
        int chunks, ILogger? logger = null, ArenaBudgetPolicy policy = ArenaBudgetPolicy.Reject, TimeSpan? waitTimeout = null)
    {
        var options = new SwitchableAllocatorOptions
        {
            InitialArenaSize = ChunkSize,
            MemoryBudget = chunks * ChunkSize,
            MaxArenaSizePerRequest = ChunkSize,
            BudgetPolicy = policy,
            BudgetWaitTimeout = waitTimeout ?? TimeSpan.FromMilliseconds(100),
        };
        var source = ArenaChunkSource.ForThisMachine(options, NullLogger.Instance);
        var budget = new ArenaChunkBudget(options, source, new AllocHostingMetrics(_meters, new SwitchableAllocator()), logger ?? NullLogger.Instance);
        _budgets.Add(budget);
        return (budget, source);
    }
}
