using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
using Microsoft.Extensions.Logging.Abstractions;

namespace AllocHosting.Tests;

public sealed class ArenaChunkSourceTests : IDisposable
{
    private readonly string _sysfs = Path.Combine(Path.GetTempPath(), "numa-pool-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_sysfs))
        {
            Directory.Delete(_sysfs, recursive: true);
        }
    }

    public static TheoryData<ArenaNumaPlacement, string> PlacementsOnTwoNodes => RequestArenaPoolTests.PlacementsOnTwoNodes;

    [Theory]
    [MemberData(nameof(PlacementsOnTwoNodes))]
    public void Each_placement_maps_to_its_policy_on_a_multi_node_machine(ArenaNumaPlacement placement, string policy)
    {
        NumaTopology twoNodes = FakeTopology.Create(_sysfs, "0-3", "");

        Assert.Equal(policy, ArenaChunkSource.PolicyFor(placement, twoNodes).ToString());
    }

    [Fact]
    public void Interleave_spreads_over_every_node_of_the_topology()
    {
        NumaTopology fourNodes = FakeTopology.Create(_sysfs, "0-1", "2-3", "4-5", "6-7");

        Assert.Equal(NumaPolicy.Interleave(NumaNodeSet.Of(0, 1, 2, 3)), ArenaChunkSource.PolicyFor(ArenaNumaPlacement.Interleave, fourNodes));
    }

    [Theory]
    [InlineData(ArenaNumaPlacement.LocalToRequestThread)]
    [InlineData(ArenaNumaPlacement.Interleave)]
    [InlineData(ArenaNumaPlacement.ProcessDefault)]
    public void A_single_node_machine_gets_no_policy_whatever_the_placement(ArenaNumaPlacement placement)
    {
        // One node gains nothing from a policy and would pay an mbind per mapping.
        NumaTopology oneNode = FakeTopology.Create(_sysfs, "0-7");

        Assert.Equal(NumaPolicy.Default, ArenaChunkSource.PolicyFor(placement, oneNode));
        Assert.Equal(NumaPolicy.Default, ArenaChunkSource.PolicyFor(placement, NumaTopology.FromSysfs(Path.Combine(_sysfs, "absent"))));
    }

    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public void Chunks_are_carved_in_segments_of_up_to_sixteen_and_a_segment_goes_back_once_all_its_chunks_are_retired(RequestArenaKind kind)
    {
        var options = new SwitchableAllocatorOptions { ArenaKind = kind, InitialArenaSize = 16 * 1024, MemoryBudget = 20 * 16 * 1024 };
        var memory = new CountingMemorySource(ArenaChunkSource.CreateMemorySource(options.NumaPlacement, NumaTopology.Current, NullLogger.Instance));
        var source = new ArenaChunkSource(options, memory);

        var chunks = Enumerable.Range(0, 20).Select(_ => source.CreateChunk(maxChunks: 20)).ToList();
        Assert.Equal(20, source.ChunkCount);
        Assert.Equal(2, memory.Regions);
        Assert.All(chunks, chunk => Assert.Equal(source.ChunkCapacity, chunk.Capacity));

        // The second segment holds the last four: retiring them empties it.
        chunks.Skip(ArenaChunkSource.SlotsPerSegment).ToList().ForEach(source.Retire);
        Assert.Equal(1, source.ReleaseEmptySegments());
        Assert.Equal(1, memory.Regions);

        chunks.Take(ArenaChunkSource.SlotsPerSegment).ToList().ForEach(source.Retire);
        source.CloseSegments();
        Assert.Equal(0, source.ChunkCount);
        Assert.Equal(0, memory.Regions);
    }

    [Fact]
    public void A_large_chunk_is_a_region_of_its_own_counted_until_it_is_retired()
    {
        var options = new SwitchableAllocatorOptions { InitialArenaSize = 16 * 1024 };
        var memory = new CountingMemorySource(NativeMemorySource.Shared);
        var source = new ArenaChunkSource(options, memory);

        ArenaChunk large = source.CreateLargeChunk(128 * 1024);
        Assert.Equal(128 * 1024, large.Capacity);
        Assert.Equal(ArenaChunkKind.Bump, large.Kind);
        Assert.Equal(1, source.LargeChunkCount);
        Assert.Equal(128 * 1024, source.LargeBytes);
        Assert.Equal(0, source.ChunkCount);
        Assert.Equal(1, memory.Regions);

        Assert.True(large.TryRent(1000, 16, out Memory<byte> rented));
        Assert.Equal(1000, source.LiveBytes);
        Assert.Equal(1, source.RentCount);

        source.RetireLargeChunk(large);
        Assert.Equal(0, source.LargeChunkCount);
        Assert.Equal(0, source.LargeBytes);
        Assert.Equal(0, memory.Regions);
        Assert.Equal(1, source.RentCount);   // kept after the chunk is gone
        Assert.Throws<ObjectDisposedException>(() => rented.Span[0]);
    }

    [Fact]
    public void Retiring_a_chunk_that_is_not_one_of_its_large_chunks_throws_and_changes_nothing()
    {
        var options = new SwitchableAllocatorOptions { InitialArenaSize = 16 * 1024 };
        var source = new ArenaChunkSource(options, NativeMemorySource.Shared);
        using ArenaChunk foreign = ArenaChunk.CreateBump(NativeMemorySource.Shared, 64 * 1024);
        ArenaChunk own = source.CreateLargeChunk(64 * 1024);

        Assert.Throws<InvalidOperationException>(() => source.RetireLargeChunk(foreign));
        Assert.Equal(1, source.LargeChunkCount);
        source.RetireLargeChunk(own);
        Assert.Throws<InvalidOperationException>(() => source.RetireLargeChunk(own));   // twice
    }
}
