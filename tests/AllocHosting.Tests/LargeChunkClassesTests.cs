using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Tests;

public sealed class LargeChunkClassesTests : IDisposable
{
    private const int K = 1024;

    private readonly List<ArenaChunk> _chunks = [];

    public void Dispose() => _chunks.ForEach(chunk => chunk.Dispose());

    [Fact]
    public void The_default_classes_double_from_twice_the_chunk_up_to_the_per_request_maximum()
    {
        var classes = new LargeChunkClasses(64 * K, 1024 * K);

        Assert.Equal([128L * K, 256L * K, 512L * K, 1024L * K], classes.ClassSizes);
        Assert.Equal(1024L * K, classes.LargestClassSize);
    }

    [Fact]
    public void A_maximum_between_classes_gets_the_first_class_that_holds_it_and_at_least_one_class()
    {
        Assert.Equal([128L * K, 256L * K], new LargeChunkClasses(64 * K, 200 * K).ClassSizes);
        Assert.Equal([128L * K], new LargeChunkClasses(64 * K, 64 * K).ClassSizes);
        // Chunk sizes need not be powers of two: the classes still double.
        Assert.Equal([24L * K, 48L * K, 96L * K], new LargeChunkClasses(12 * K, 90 * K).ClassSizes);
        // Capped at 1 GiB however large the maximum.
        Assert.Equal(LargeChunkClasses.MaxClassSize, new LargeChunkClasses(64 * K, SwitchableAllocatorOptions.MaxMemoryBudget).LargestClassSize);
    }

    [Theory]
    [InlineData(1, 128 * K)]
    [InlineData(64 * K + 1, 128 * K)]
    [InlineData(128 * K, 128 * K)]          // a power-of-two rent fits its class exactly
    [InlineData(128 * K + 1, 256 * K)]
    [InlineData(320_000, 512 * K)]
    [InlineData(1024 * K, 1024 * K)]
    [InlineData(1024 * K + 1, 1024 * K + 4096)]   // beyond the largest class: oversize, whole pages
    [InlineData(3_000_000, 3_002_368)]
    public void A_rent_gets_the_smallest_class_that_holds_it_or_an_oversize_chunk_in_whole_pages(long bytes, long expected)
    {
        var classes = new LargeChunkClasses(64 * K, 1024 * K);

        Assert.Equal(expected, classes.ChunkSizeFor(bytes));
        Assert.Equal(expected <= 1024 * K, classes.IsClassSize(expected));
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(-1L)]
    [InlineData(int.MaxValue)]
    [InlineData(long.MaxValue)]
    public void A_size_no_chunk_can_hold_is_refused(long bytes)
    {
        var classes = new LargeChunkClasses(64 * K, 1024 * K);

        Assert.Throws<ArgumentOutOfRangeException>(() => classes.ChunkSizeFor(bytes));
    }

    [Fact]
    public void Idle_chunks_go_out_last_in_first_out_per_class_and_oversize_chunks_are_not_kept()
    {
        var classes = new LargeChunkClasses(64 * K, 1024 * K);
        ArenaChunk a = Chunk(128 * K), b = Chunk(128 * K), c = Chunk(256 * K), oversize = Chunk((1024 * K) + 4096);

        Assert.True(classes.TryReturnIdle(a));
        Assert.True(classes.TryReturnIdle(b));
        Assert.True(classes.TryReturnIdle(c));
        Assert.False(classes.TryReturnIdle(oversize));
        Assert.Equal(3, classes.IdleCount);
        Assert.Equal(512L * K, classes.IdleBytes);

        Assert.Null(classes.TakeIdle(512 * K));
        Assert.Null(classes.TakeIdle(100 * K));   // not a class size
        Assert.Same(b, classes.TakeIdle(128 * K));
        Assert.Same(a, classes.TakeIdle(128 * K));
        Assert.Null(classes.TakeIdle(128 * K));
        Assert.Same(c, classes.TakeIdle(256 * K));
        Assert.Equal(0, classes.IdleCount);
        Assert.Equal(0, classes.IdleBytes);
    }

    [Fact]
    public void Making_room_takes_the_coldest_chunk_of_the_largest_class_first()
    {
        var classes = new LargeChunkClasses(64 * K, 1024 * K);
        ArenaChunk small1 = Chunk(128 * K), big1 = Chunk(512 * K), big2 = Chunk(512 * K);
        classes.TryReturnIdle(small1);
        classes.TryReturnIdle(big1);
        classes.TryReturnIdle(big2);

        Assert.Same(big1, classes.TakeColdest());
        Assert.Same(big2, classes.TakeColdest());
        Assert.Same(small1, classes.TakeColdest());
        Assert.Null(classes.TakeColdest());
    }

    [Fact]
    public void Trimming_takes_per_class_the_chunks_that_stayed_idle_through_the_whole_interval()
    {
        var classes = new LargeChunkClasses(64 * K, 1024 * K);
        ArenaChunk a = Chunk(128 * K), b = Chunk(128 * K), c = Chunk(256 * K);
        classes.TryReturnIdle(a);
        classes.TryReturnIdle(b);
        classes.TryReturnIdle(c);

        // The first interval started with nothing idle: nothing stayed idle through it.
        Assert.Empty(classes.TakeIdleThroughInterval());

        // In the second, one 128 KiB chunk was taken and given back; the other and the 256 KiB one stayed idle.
        Assert.Same(b, classes.TakeIdle(128 * K));
        classes.TryReturnIdle(b);
        Assert.Equal([a, c], classes.TakeIdleThroughInterval());
        Assert.Equal(1, classes.IdleCount);
        Assert.Equal(128L * K, classes.IdleBytes);

        // b stayed idle through the third.
        Assert.Equal([b], classes.TakeIdleThroughInterval());
        Assert.Equal(0, classes.IdleCount);
    }

    [Fact]
    public void At_shutdown_every_idle_chunk_is_taken()
    {
        var classes = new LargeChunkClasses(64 * K, 1024 * K);
        classes.TryReturnIdle(Chunk(128 * K));
        classes.TryReturnIdle(Chunk(1024 * K));

        Assert.Equal(2, classes.TakeAllIdle().Count);
        Assert.Equal(0, classes.IdleCount);
        Assert.Equal(0, classes.IdleBytes);
        Assert.Empty(classes.TakeIdleThroughInterval());
    }

    private ArenaChunk Chunk(long size)
    {
        ArenaChunk chunk = ArenaChunk.CreateBump(NativeMemorySource.Shared, (nuint)size);
        _chunks.Add(chunk);
        return chunk;
    }
}
