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
    private readonly string _sysfs = Path.Combine(Path.GetTempPath(), "numa-pool-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        _meters.Dispose();
        if (Directory.Exists(_sysfs))
        {
            Directory.Delete(_sysfs, recursive: true);
        }
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

    [Fact]
    public void The_budget_caps_the_chunks_and_a_spent_budget_throws_under_Reject()
    {
        var options = new SwitchableAllocatorOptions { InitialArenaSize = 16 * 1024, MemoryBudget = 2 * 16 * 1024, MaxArenaSizePerRequest = 2 * 16 * 1024, BudgetPolicy = ArenaBudgetPolicy.Reject };
        var chunks = ArenaChunkSource.ForThisMachine(options, NullLogger.Instance);
        using var pool = CreatePool(options, chunks);
        var context = new DefaultHttpContext();
        var arena = pool.RentArena(context);
        pool.TakeChunk(arena);
        pool.TakeChunk(arena);

        Assert.Throws<RequestArenaBudgetExceededException>(() => pool.TakeChunk(arena));
        Assert.True(arena.WasRejected);
        Assert.Equal(2, chunks.ChunkCount);
    }

    [Fact]
    public void A_request_that_rents_nothing_never_reads_its_processor_slot_and_one_that_rents_does()
    {
        var options = new SwitchableAllocatorOptions();
        using var pool = CreatePool(options, ArenaChunkSource.ForThisMachine(options, NullLogger.Instance));
        var context = new DefaultHttpContext();

        // A fresh pool: the arena object comes new and goes back as the thread's spare, with no slot.
        RequestArena arena = pool.RentArena(context);
        pool.ReturnArena(arena, context);
        Assert.False(arena.HasReadSlot);

        RequestArena next = pool.RentArena(context);
        Assert.Same(arena, next);
        next.Rent(64, next.Lease);
        Assert.True(next.HasReadSlot);
        pool.ReturnArena(next, context);
        Assert.Equal(0, pool.ChunksInUse);
    }

    [Theory]
    [MemberData(nameof(PlacementsOnTwoNodes))]
    public void The_pool_gives_its_memory_source_the_placement_policy_and_rents_from_it(ArenaNumaPlacement placement, string policy)
    {
        // Node 1 does not exist on a one-node machine; the kernel keeps the nodes it has (Interleave{0}).
        var options = new SwitchableAllocatorOptions { NumaPlacement = placement };
        IMemorySource memory = ArenaChunkSource.CreateMemorySource(placement, FakeTopology.Create(_sysfs, "0-3", ""), NullLogger.Instance);
        using var pool = CreatePool(options, memory);
        if (memory is not MemoryMapSource source)
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
        var options = new SwitchableAllocatorOptions { NumaPlacement = placement, ArenaKind = kind };
        IMemorySource memory = ArenaChunkSource.CreateMemorySource(placement, NumaTopology.Current, NullLogger.Instance);
        using var pool = CreatePool(options, memory);
        if (memory is MemoryMapSource source)
        {
            Assert.Equal(ArenaChunkSource.PolicyFor(placement, NumaTopology.Current), source.Options.NumaPolicy);
            if (!NumaTopology.Current.IsMultiNode)
            {
                Assert.Equal(NumaPolicy.Default, source.Options.NumaPolicy);
            }
        }

        RentWriteAndRelease(pool);
    }

    // The figures each arena object keeps (active, the bytes of ended uses), summed by the pool: right
    // while requests hold memory, after they end, when more arena objects are out at once than the pool
    // keeps (the extra ones are dropped and hand their figure over), and when the ends run on other threads.
    [Fact]
    public async Task Active_requests_and_allocated_bytes_add_up_across_arena_objects_also_those_dropped()
    {
        const int Requests = 300;   // more than the pool keeps (256): 44 objects are dropped on return
        const int Rent = 64;
        var options = new SwitchableAllocatorOptions { InitialArenaSize = 16 * 1024, MemoryBudget = Requests * 16 * 1024, MaxArenaSizePerRequest = 16 * 1024 };
        using var pool = CreatePool(options, ArenaChunkSource.ForThisMachine(options, NullLogger.Instance));
        var arenas = new RequestArena[Requests];
        var contexts = new HttpContext[Requests];
        for (int round = 1; round <= 3; round++)
        {
            for (int i = 0; i < Requests; i++)
            {
                contexts[i] = new DefaultHttpContext();
                arenas[i] = pool.RentArena(contexts[i]);
            }

            Assert.Equal(0, pool.ActiveArenas);   // nothing rented yet
            for (int i = 0; i < Requests; i++)
            {
                arenas[i].Rent(Rent, arenas[i].Lease);
            }

            Assert.Equal(Requests, pool.ActiveArenas);
            Assert.Equal(((round - 1) * Requests * Rent) + (Requests * Rent), pool.AllocatedBytes);

            // Half of the requests end on other threads, at once.
            await Task.WhenAll(Enumerable.Range(0, Requests).Select(i => i % 2 == 0
                ? Task.Run(() => pool.ReturnArena(arenas[i], contexts[i]))
                : Task.FromResult(Return(i))));
            Assert.Equal(0, pool.ActiveArenas);
            Assert.Equal(round * Requests * Rent, pool.AllocatedBytes);
        }

        bool Return(int i)
        {
            pool.ReturnArena(arenas[i], contexts[i]);
            return true;
        }
    }

    // A request that ends on a thread leaves its arena object as that thread's spare; when the thread
    // ends, the object is lost. The pool must not keep it alive for its figures (a server whose pool
    // threads come and go would keep one object per ended thread for ever), and its bytes must stay in
    // allocated once it is collected.
    [Fact]
    public void An_arena_object_lost_with_its_thread_is_collected_and_its_bytes_stay_counted()
    {
        const int Rent = 64;
        const int Threads = 4;
        var options = new SwitchableAllocatorOptions { InitialArenaSize = 16 * 1024, MemoryBudget = 8 * 16 * 1024, MaxArenaSizePerRequest = 16 * 1024 };
        using var pool = CreatePool(options, ArenaChunkSource.ForThisMachine(options, NullLogger.Instance));
        var lost = new WeakReference<RequestArena>[Threads];
        for (int i = 0; i < Threads; i++)
        {
            int index = i;
            var thread = new Thread(() =>
            {
                // A fresh thread has no spare: the ended request's arena object becomes this thread's spare.
                var context = new DefaultHttpContext();
                RequestArena arena = pool.RentArena(context);
                arena.Rent(Rent, arena.Lease);
                pool.ReturnArena(arena, context);
                lost[index] = new WeakReference<RequestArena>(arena);
            });
            thread.Start();
            Assert.True(thread.Join(TimeSpan.FromSeconds(10)));
        }

        Assert.Equal(Threads * Rent, pool.AllocatedBytes);
        for (int attempt = 0; attempt < 10 && lost.Any(reference => reference.TryGetTarget(out _)); attempt++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }

        Assert.All(lost, reference => Assert.False(reference.TryGetTarget(out _)));
        Assert.Equal(Threads * Rent, pool.AllocatedBytes);
        Assert.Equal(0, pool.ActiveArenas);

        // The pool goes on counting new requests beside the collected ones' bytes.
        var next = new DefaultHttpContext();
        RequestArena again = pool.RentArena(next);
        again.Rent(Rent, again.Lease);
        Assert.Equal(1, pool.ActiveArenas);
        pool.ReturnArena(again, next);
        Assert.Equal((Threads + 1) * Rent, pool.AllocatedBytes);
    }

    private RequestArenaPool CreatePool(SwitchableAllocatorOptions options, IMemorySource memory)
    {
        options.InitialArenaSize = 16 * 1024;
        options.MemoryBudget = 8 * 16 * 1024;
        options.MaxArenaSizePerRequest = 4 * 16 * 1024;
        return CreatePool(options, new ArenaChunkSource(options, memory));
    }

    private RequestArenaPool CreatePool(SwitchableAllocatorOptions options, ArenaChunkSource chunks) =>
        new(Options.Create(options), chunks, new AllocHostingMetrics(_meters, new SwitchableAllocator()), NullLogger<RequestArenaPool>.Instance, _time);

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

        Assert.True(pool.ChunksInUse >= 2);   // so the pool carved at least one segment from the source
        pool.ReturnArena(arena, context);
        Assert.Equal(0, pool.ChunksInUse);
        Assert.Equal(0, pool.LiveBytes);
    }
}
