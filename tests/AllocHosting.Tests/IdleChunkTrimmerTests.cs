using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace AllocHosting.Tests;

public sealed class IdleChunkTrimmerTests : IDisposable
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);

    private readonly FakeTimeProvider _time = new();
    private readonly TestMeterFactory _meters = new();
    private readonly FakeLogger<RequestArenaPool> _logger = new();
    private readonly CountingMemorySource _memory;
    private readonly ArenaChunkSource _source;
    private readonly ArenaChunkBudget _budget;
    private readonly IdleChunkTrimmer _trimmer;

    public IdleChunkTrimmerTests()
    {
        var options = new SwitchableAllocatorOptions
        {
            InitialArenaSize = 16 * 1024,
            MemoryBudget = 64 * 16 * 1024,
            IdleTrimInterval = Interval,
        };
        _memory = new CountingMemorySource(ArenaChunkSource.CreateMemorySource(options.NumaPlacement, NumaTopology.Current, NullLogger.Instance));
        _source = new ArenaChunkSource(options, _memory);
        _budget = new ArenaChunkBudget(options, _source, new AllocHostingMetrics(_meters, new SwitchableAllocator()), _logger);
        _trimmer = new IdleChunkTrimmer(_budget, Interval, _time, _logger);
    }

    public void Dispose()
    {
        _budget.Dispose();
        _trimmer.Dispose();
        _meters.Dispose();
    }

    [Fact]
    public void Chunks_idle_through_a_whole_trim_interval_are_disposed_and_empty_segments_go_back()
    {
        // 20 requests at once need two segments of 16 chunks.
        var chunks = Enumerable.Range(0, 20).Select(_ => _budget.Take(0)!).ToList();
        Assert.Equal(2, _memory.Regions);
        chunks.ForEach(chunk => _budget.Return(chunk, 0));

        // Afterwards only 2 at a time are used: the first trim only learns the low-water mark...
        _time.Advance(Interval);
        Assert.Equal(20, _source.ChunkCount);
        UseTwoChunks();

        // ...the second disposes the 18 chunks nobody used through the interval.
        _time.Advance(Interval);

        Assert.Equal(2, _source.ChunkCount);
        Assert.Equal(1, _memory.Regions);
        UseTwoChunks();
        Assert.Equal(2, _source.ChunkCount);
        var trimmed = Assert.Single(_logger.Collector.GetSnapshot(), r => r.Id.Name == "ArenaChunksTrimmed");
        Assert.Contains("18", trimmed.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_busy_pool_keeps_its_chunks()
    {
        UseTwoChunks();
        for (int i = 0; i < 3; i++)
        {
            UseTwoChunks();
            _time.Advance(Interval);
            UseTwoChunks();
        }

        // Both chunks are used in every interval... but idle at its end, and idle means unused since the last trim.
        Assert.Equal(2, _source.ChunkCount);
        Assert.DoesNotContain(_logger.Collector.GetSnapshot(), r => r.Id.Name == "ArenaChunksTrimmed");
    }

    [Fact]
    public void A_disposed_budget_is_not_trimmed()
    {
        UseTwoChunks();
        _budget.Dispose();

        _time.Advance(Interval);
        _time.Advance(Interval);

        Assert.DoesNotContain(_logger.Collector.GetSnapshot(), r => r.Id.Name == "ArenaChunksTrimmed");
    }

    private void UseTwoChunks()
    {
        ArenaChunk x = _budget.Take(0)!;
        ArenaChunk y = _budget.Take(0)!;
        _budget.Return(x, 0);
        _budget.Return(y, 0);
    }
}
