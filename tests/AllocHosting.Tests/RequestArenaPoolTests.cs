using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
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
    private readonly string _sysfs = Path.Combine(Path.GetTempPath(), "numa-pool-" + Guid.NewGuid().ToString("N"));

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
        if (Directory.Exists(_sysfs))
        {
            Directory.Delete(_sysfs, recursive: true);
        }
    }

    [Fact]
    public void The_chunk_given_back_last_is_handed_out_first()
    {
        var arena = _pool.RentArena(new DefaultHttpContext());
        ArenaChunk a = _pool.TakeChunk(arena);
        ArenaChunk b = _pool.TakeChunk(arena);
        _pool.ReturnChunk(a, arena.Slot);
        _pool.ReturnChunk(b, arena.Slot);

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
        chunks.ForEach(chunk => _pool.ReturnChunk(chunk, arena.Slot));

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
    public void A_chunk_idle_in_another_processors_slot_is_taken_before_the_budget_refuses()
    {
        using var pool = new RequestArenaPool(
            Options.Create(new SwitchableAllocatorOptions { InitialArenaSize = 16 * 1024, MemoryBudget = 16 * 1024, MaxArenaSizePerRequest = 16 * 1024, BudgetPolicy = ArenaBudgetPolicy.Reject }),
            new AllocHostingMetrics(_meters, new SwitchableAllocator()),
            NullLogger<RequestArenaPool>.Instance,
            _time);
        var arena = pool.RentArena(new DefaultHttpContext());
        ArenaChunk only = pool.TakeChunk(arena);

        // The whole budget idles in the slot of another processor than the arena's.
        pool.ReturnChunk(only, arena.Slot + 1);

        Assert.Equal(1, pool.IdleChunkCount);
        Assert.Same(only, pool.TakeChunk(arena));
        Assert.Equal(0, pool.IdleChunkCount);
    }

    [Fact]
    public void Processor_slots_take_from_their_own_slot_and_any_slot_when_asked()
    {
        var slots = new ProcessorSlots<string>();
        int mine = slots.CurrentIndex;
        int other = (mine + 1) % ProcessorSlots<string>.SlotCount;

        Assert.True(slots.TryPut("a", other));
        Assert.False(slots.TryPut("b", other));
        Assert.Equal("a", slots.Exchange("c", other));
        Assert.Equal(1, slots.Count);
        Assert.Equal(ProcessorSlots<string>.SlotCount == 1 ? "c" : null, slots.Take(mine));
        Assert.Equal(ProcessorSlots<string>.SlotCount == 1 ? null : "c", slots.TakeAny());
        Assert.Null(slots.TakeAny());
        Assert.Equal(0, slots.Count);

        var counter = new ProcessorCounter();
        counter.Add(mine, 5);
        counter.Add(other, 7);
        counter.Add(mine + ProcessorSlots<string>.SlotCount, -2);   // indexes wrap
        Assert.Equal(10, counter.Value);
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

        pool.ReturnChunk(held, arena.Slot);
        held = pool.TakeChunk(arena);
        Assert.Throws<RequestArenaBudgetExceededException>(() => pool.TakeChunk(arena));

        Assert.Equal(2, logger.Collector.GetSnapshot().Count(r => r.Id.Name == "ArenaBudgetSpent"));
    }

    public static TheoryData<ArenaNumaPlacement, string> PlacementsOnTwoNodes => new()
    {
        { ArenaNumaPlacement.LocalToRequestThread, "Local" },
        { ArenaNumaPlacement.Interleave, "Interleave{0,1}" }, // node 1 has memory but no CPU: still a node to spread over
        { ArenaNumaPlacement.ProcessDefault, "Default" },
        { (ArenaNumaPlacement)99, "Default" }, // the validator rejects it; the pool still adds no policy
    };

    public static TheoryData<ArenaNumaPlacement, RequestArenaKind> PlacementsAndKinds
    {
        get
        {
            var data = new TheoryData<ArenaNumaPlacement, RequestArenaKind>();
            foreach (ArenaNumaPlacement placement in Enum.GetValues<ArenaNumaPlacement>())
            {
                data.Add(placement, RequestArenaKind.Bump);
                data.Add(placement, RequestArenaKind.BitSet);
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(PlacementsOnTwoNodes))]
    public void Each_placement_maps_to_its_policy_on_a_multi_node_machine(ArenaNumaPlacement placement, string policy)
    {
        NumaTopology twoNodes = FakeTopology("0-3", "");

        Assert.Equal(policy, RequestArenaPool.PolicyFor(placement, twoNodes).ToString());
    }

    [Fact]
    public void Interleave_spreads_over_every_node_of_the_topology()
    {
        NumaTopology fourNodes = FakeTopology("0-1", "2-3", "4-5", "6-7");

        Assert.Equal(NumaPolicy.Interleave(NumaNodeSet.Of(0, 1, 2, 3)), RequestArenaPool.PolicyFor(ArenaNumaPlacement.Interleave, fourNodes));
    }

    [Theory]
    [InlineData(ArenaNumaPlacement.LocalToRequestThread)]
    [InlineData(ArenaNumaPlacement.Interleave)]
    [InlineData(ArenaNumaPlacement.ProcessDefault)]
    public void A_single_node_machine_gets_no_policy_whatever_the_placement(ArenaNumaPlacement placement)
    {
        // One node gains nothing from a policy and would pay an mbind per mapping.
        NumaTopology oneNode = FakeTopology("0-7");

        Assert.Equal(NumaPolicy.Default, RequestArenaPool.PolicyFor(placement, oneNode));
        Assert.Equal(NumaPolicy.Default, RequestArenaPool.PolicyFor(placement, NumaTopology.FromSysfs(Path.Combine(_sysfs, "absent"))));
    }

    [Theory]
    [MemberData(nameof(PlacementsOnTwoNodes))]
    public void The_pool_gives_its_memory_source_the_placement_policy_and_rents_from_it(ArenaNumaPlacement placement, string policy)
    {
        // Node 1 does not exist on a one-node machine; the kernel keeps the nodes it has (Interleave{0}).
        using var pool = CreatePool(new SwitchableAllocatorOptions { NumaPlacement = placement }, FakeTopology("0-3", ""));
        if (pool.Source is not MemoryMapSource source)
        {
            Assert.False(MemoryMapSource.IsSupported);
            return;
        }

        Assert.Equal(policy, source.Options.NumaPolicy.ToString());
        RentWriteAndRelease(pool);
        Assert.True(source.NumaPolicyApplied, source.FallbackReason);
        Assert.Null(source.LastFailure);
    }

    [Theory]
    [MemberData(nameof(PlacementsAndKinds))]
    public void Arenas_of_this_machine_work_with_each_placement(ArenaNumaPlacement placement, RequestArenaKind kind)
    {
        using var pool = CreatePool(new SwitchableAllocatorOptions { NumaPlacement = placement, ArenaKind = kind }, topology: null);
        if (pool.Source is MemoryMapSource source)
        {
            Assert.Equal(RequestArenaPool.PolicyFor(placement, NumaTopology.Current), source.Options.NumaPolicy);
            if (!NumaTopology.Current.IsMultiNode)
            {
                Assert.Equal(NumaPolicy.Default, source.Options.NumaPolicy);
            }
        }

        RentWriteAndRelease(pool);
    }

    private RequestArenaPool CreatePool(SwitchableAllocatorOptions options, NumaTopology? topology)
    {
        options.InitialArenaSize = 16 * 1024;
        options.MemoryBudget = 8 * 16 * 1024;
        options.MaxArenaSizePerRequest = 4 * 16 * 1024;
        var metrics = new AllocHostingMetrics(_meters, new SwitchableAllocator());
        return topology is null
            ? new RequestArenaPool(Options.Create(options), metrics, NullLogger<RequestArenaPool>.Instance, _time)
            : new RequestArenaPool(Options.Create(options), metrics, NullLogger<RequestArenaPool>.Instance, _time, topology);
    }

    // A request rents more than one chunk holds, writes every byte, reads them back and ends.
    private static void RentWriteAndRelease(RequestArenaPool pool)
    {
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        var rents = new List<Memory<byte>>();
        for (int i = 0; i < 3; i++)
        {
            Memory<byte> memory = arena.Rent(pool.ChunkCapacity / 2);
            memory.Span.Fill((byte)(i + 1));
            rents.Add(memory);
        }

        for (int i = 0; i < rents.Count; i++)
        {
            Assert.True(rents[i].Span.IndexOfAnyExcept((byte)(i + 1)) < 0);
        }

        Assert.True(pool.ChunksInUse >= 2);
        Assert.True(pool.SegmentCount >= 1);
        pool.ReturnArena(arena, context);
        Assert.Equal(0, pool.ChunksInUse);
        Assert.Equal(0, pool.LiveBytes);
    }

    // A sysfs-like directory with one node per CPU list (empty: a memory-only node), ids from 0.
    private NumaTopology FakeTopology(params string[] cpuLists)
    {
        string root = Path.Combine(_sysfs, Guid.NewGuid().ToString("N"));
        for (int node = 0; node < cpuLists.Length; node++)
        {
            Directory.CreateDirectory(Path.Combine(root, $"node{node}"));
            File.WriteAllText(Path.Combine(root, $"node{node}", "cpulist"), cpuLists[node] + "\n");
        }

        NumaTopology topology = NumaTopology.FromSysfs(root, () => 0);
        Assert.Equal(cpuLists.Length, topology.NodeCount);
        return topology;
    }

    private void UseTwoChunks(RequestArena arena)
    {
        ArenaChunk x = _pool.TakeChunk(arena);
        ArenaChunk y = _pool.TakeChunk(arena);
        _pool.ReturnChunk(x, arena.Slot);
        _pool.ReturnChunk(y, arena.Slot);
    }
}
