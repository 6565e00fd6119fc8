using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
using Microsoft.Extensions.Logging.Abstractions;

namespace AllocHosting.Tests;

/// <summary>
/// Issue 11, "Reliability suite": a refused kernel call under the request arenas. The memory map
/// source turns a refused <c>mmap</c> (or a refused required step after it) into
/// <see cref="MemorySourceExhaustedException"/>, an <see cref="OutOfMemoryException"/>, with nothing
/// left mapped (proved through the system-call seam in the allocators' KernelFaultTests); here a
/// source that throws exactly that at chosen calls stands in for it, since the seam is internal to
/// the allocators. Each refusal reaches the caller as that exception, the chunk source and the budget
/// hold no region and count no bytes for it, and the next chunk comes.
/// </summary>
public sealed unsafe class KernelFaultTests : IDisposable
{
    private const int ChunkSize = 16 * 1024;

    private readonly TestMeterFactory _meters = new();
    private readonly List<ArenaChunkBudget> _budgets = [];

    public void Dispose()
    {
        _budgets.ForEach(budget => budget.Dispose());
        _meters.Dispose();
    }

    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public void A_refused_segment_mapping_creates_no_chunk_holds_no_region_and_the_next_chunk_comes(RequestArenaKind kind)
    {
        var (source, memory, _) = CreateSource(kind);

        memory.RefuseNext(1);
        Assert.ThrowsAny<OutOfMemoryException>(() => source.CreateChunk(maxChunks: 32));
        Assert.Equal(0, source.ChunkCount);
        Assert.Equal(0, memory.Regions);

        ArenaChunk chunk = source.CreateChunk(maxChunks: 32);   // recovered
        Assert.Equal(1, source.ChunkCount);
        Assert.Equal(1, memory.Regions);
        source.Retire(chunk);
        Assert.Equal(1, source.ReleaseEmptySegments());
        source.CloseSegments();
        Assert.Equal(0, memory.Regions);
    }

    [Fact]
    public void A_refused_large_chunk_mapping_counts_no_bytes_and_the_next_large_chunk_comes()
    {
        var (source, memory, _) = CreateSource(RequestArenaKind.Bump);

        memory.RefuseNext(1);
        Assert.ThrowsAny<OutOfMemoryException>(() => source.CreateLargeChunk(1 << 20));
        Assert.Equal(0, source.LargeChunkCount);
        Assert.Equal(0, source.LargeBytes);
        Assert.Equal(0, memory.Regions);

        ArenaChunk large = source.CreateLargeChunk(1 << 20);
        Assert.Equal(1, memory.Regions);
        source.RetireLargeChunk(large);
        Assert.Equal(0, source.LargeBytes);
        Assert.Equal(0, memory.Regions);
    }

    [Fact]
    public void The_budget_passes_a_refused_mapping_on_commits_nothing_for_it_and_serves_the_next_take()
    {
        var (source, memory, options) = CreateSource(RequestArenaKind.Bump, budgetChunks: 4);
        var budget = new ArenaChunkBudget(options, source, new AllocHostingMetrics(_meters, new SwitchableAllocator()), NullLogger.Instance);
        _budgets.Add(budget);

        memory.RefuseNext(1);
        Assert.ThrowsAny<OutOfMemoryException>(() => budget.Take(0));
        Assert.Equal(0, budget.CommittedBytes);
        Assert.Equal(0, budget.ChunksInUse);

        memory.RefuseNext(1);
        Assert.ThrowsAny<OutOfMemoryException>(() => budget.TakeLarge(3 * ChunkSize));
        Assert.Equal(0, budget.CommittedBytes);

        // Recovered: the whole budget is still there to take.
        var taken = Enumerable.Range(0, 4).Select(_ => budget.Take(0)).ToList();
        Assert.All(taken, Assert.NotNull);
        Assert.Equal(4, budget.ChunksInUse);
        taken.ForEach(chunk => budget.Return(chunk!, 0));
        Assert.Equal(0, budget.ChunksInUse);
    }

    private static (ArenaChunkSource Source, RefusingMemorySource Memory, SwitchableAllocatorOptions Options) CreateSource(RequestArenaKind kind, int budgetChunks = 64)
    {
        var options = new SwitchableAllocatorOptions
        {
            ArenaKind = kind,
            InitialArenaSize = ChunkSize,
            MemoryBudget = budgetChunks * ChunkSize,
            MaxArenaSizePerRequest = 4 * ChunkSize,
        };
        var memory = new RefusingMemorySource(ArenaChunkSource.CreateMemorySource(options.NumaPlacement, NumaTopology.Current, NullLogger.Instance));
        return (new ArenaChunkSource(options, memory), memory, options);
    }

    /// <summary>
    /// A memory source that refuses chosen requests as a memory map source does when the kernel
    /// refuses <c>mmap</c> (with ENOMEM): <see cref="MemorySourceExhaustedException"/> from
    /// <see cref="Obtain"/>, <see langword="false"/> from <see cref="TryObtain"/>; it passes every
    /// other call on and counts the regions held.
    /// </summary>
    private sealed class RefusingMemorySource(IMemorySource inner) : IMemorySource
    {
        private int _refusals;
        private int _regions;

        public int Regions => Volatile.Read(ref _regions);

        public nuint Granularity => inner.Granularity;

        /// <summary>Refuses the next <paramref name="count"/> requests.</summary>
        public void RefuseNext(int count) => Volatile.Write(ref _refusals, count);

        public byte* Obtain(nuint size)
        {
            if (Refused())
            {
                throw new MemorySourceExhaustedException(nameof(MemoryMapSource), size, "mmap failed with ENOMEM (12): Cannot allocate memory");
            }

            byte* region = inner.Obtain(size);
            Interlocked.Increment(ref _regions);
            return region;
        }

        public bool TryObtain(nuint size, out byte* region)
        {
            region = null;
            if (Refused() || !inner.TryObtain(size, out region))
            {
                return false;
            }

            Interlocked.Increment(ref _regions);
            return true;
        }

        public void Release(byte* region, nuint size)
        {
            inner.Release(region, size);
            Interlocked.Decrement(ref _regions);
        }

        private bool Refused() => Volatile.Read(ref _refusals) > 0 && Interlocked.Decrement(ref _refusals) >= 0;
    }
}
