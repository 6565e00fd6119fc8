using AllocHosting.Allocators;
using AllocHosting.Allocators.Arenas;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace AllocHosting.Tests;

public sealed class RequestArenaPoolTests : IDisposable
{
    private readonly FakeTimeProvider _time = new();
    private readonly TestMeterFactory _meters = new();
    private readonly RequestArenaPool _pool;

    public RequestArenaPoolTests()
    {
        var options = new SwitchableAllocatorOptions
        {
            InitialArenaSize = 16 * 1024,
            MemoryBudget = 64 * 16 * 1024,
            IdleTrimInterval = TimeSpan.FromSeconds(10),
        };
        _pool = new RequestArenaPool(Options.Create(options), new AllocHostingMetrics(_meters, new SwitchableAllocator()), NullLogger<RequestArenaPool>.Instance, _time);
    }

    public void Dispose()
    {
        _pool.Dispose();
        _meters.Dispose();
    }

    [Fact]
    public void The_chunk_given_back_last_is_handed_out_first()
    {
        var arena = _pool.RentArena(new DefaultHttpContext());
        ArenaChunk a = _pool.TakeChunk(arena);
        ArenaChunk b = _pool.TakeChunk(arena);
        _pool.ReturnChunk(a);
        _pool.ReturnChunk(b);

        Assert.Same(b, _pool.TakeChunk(arena));
        Assert.Same(a, _pool.TakeChunk(arena));
    }

    [Fact]
    public void Chunks_idle_through_a_whole_trim_interval_are_disposed_and_empty_segments_go_back()
    {
        // 20 requests at once need two segments of 16 chunks.
        var arena = _pool.RentArena(new DefaultHttpContext());
        var chunks = Enumerable.Range(0, 20).Select(_ => _pool.TakeChunk(arena)).ToList();
        Assert.Equal(2, _pool.SegmentCount);
        chunks.ForEach(_pool.ReturnChunk);

        // Afterwards only 2 at a time are used: the first trim only learns the low-water mark...
        _time.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal(20, _pool.ChunkCount);
        UseTwoChunks(arena);

        // ...the second disposes the 18 chunks nobody used through the interval.
        _time.Advance(TimeSpan.FromSeconds(10));

        Assert.Equal(2, _pool.ChunkCount);
        Assert.Equal(1, _pool.SegmentCount);
        UseTwoChunks(arena);
        Assert.Equal(2, _pool.ChunkCount);
    }

    [Fact]
    public void A_busy_pool_keeps_its_chunks()
    {
        var arena = _pool.RentArena(new DefaultHttpContext());
        UseTwoChunks(arena);
        for (int i = 0; i < 3; i++)
        {
            UseTwoChunks(arena);
            _time.Advance(TimeSpan.FromSeconds(10));
            UseTwoChunks(arena);
        }

        // Both chunks are used in every interval... but idle at its end, and idle means unused since the last trim.
        Assert.Equal(2, _pool.ChunkCount);
    }

    [Fact]
    public void The_budget_caps_the_chunks_and_a_spent_budget_throws_under_Reject()
    {
        using var pool = new RequestArenaPool(
            Options.Create(new SwitchableAllocatorOptions { InitialArenaSize = 16 * 1024, MemoryBudget = 2 * 16 * 1024, MaxArenaSizePerRequest = 2 * 16 * 1024, BudgetPolicy = ArenaBudgetPolicy.Reject }),
            new AllocHostingMetrics(_meters, new SwitchableAllocator()),
            NullLogger<RequestArenaPool>.Instance,
            _time);
        var context = new DefaultHttpContext();
        var arena = pool.RentArena(context);
        pool.TakeChunk(arena);
        pool.TakeChunk(arena);

        Assert.Throws<RequestArenaBudgetExceededException>(() => pool.TakeChunk(arena));
        Assert.True(arena.WasRejected);
        Assert.Equal(2, pool.ChunkCount);
    }

    [Fact]
    public void A_spent_budget_is_logged_once_per_episode()
    {
        var logger = new Microsoft.Extensions.Logging.Testing.FakeLogger<RequestArenaPool>();
        using var pool = new RequestArenaPool(
            Options.Create(new SwitchableAllocatorOptions { InitialArenaSize = 16 * 1024, MemoryBudget = 16 * 1024, MaxArenaSizePerRequest = 16 * 1024, BudgetPolicy = ArenaBudgetPolicy.Reject }),
            new AllocHostingMetrics(_meters, new SwitchableAllocator()),
            logger,
            _time);
        var arena = pool.RentArena(new DefaultHttpContext());
        ArenaChunk held = pool.TakeChunk(arena);

        for (int i = 0; i < 3; i++)
        {
            Assert.Throws<RequestArenaBudgetExceededException>(() => pool.TakeChunk(arena));
        }

        pool.ReturnChunk(held);
        held = pool.TakeChunk(arena);
        Assert.Throws<RequestArenaBudgetExceededException>(() => pool.TakeChunk(arena));

        Assert.Equal(2, logger.Collector.GetSnapshot().Count(r => r.Id.Name == "ArenaBudgetSpent"));
    }

    private void UseTwoChunks(RequestArena arena)
    {
        ArenaChunk x = _pool.TakeChunk(arena);
        ArenaChunk y = _pool.TakeChunk(arena);
        _pool.ReturnChunk(x);
        _pool.ReturnChunk(y);
    }
}
