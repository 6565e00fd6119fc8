using System.Buffers;
using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace AllocHosting.Tests;

/// <summary>
/// The quarantine of released chunks on its own (a fake clock) and in the pool: a chunk leaves no
/// sooner than its delay, in release order, cleared as it leaves, not while pinned, early only when
/// the budget is spent (counted), and on a timer when no request comes to let it out.
/// </summary>
public sealed class ReleasedChunkQuarantineTests : IDisposable
{
    private static readonly TimeSpan Delay = TimeSpan.FromMilliseconds(20);
    private readonly FakeTimeProvider _time = new();
    private readonly List<(ArenaChunk Chunk, int Slot, bool Large)> _returned = [];
    private readonly List<ArenaChunk> _chunks = [];
    private readonly ReleasedChunkQuarantine _quarantine;

    public ReleasedChunkQuarantineTests() =>
        _quarantine = new ReleasedChunkQuarantine(
            Delay, clear: true, lanes: 2, _time,
            (chunk, slot) => _returned.Add((chunk, slot, false)),
            chunk => _returned.Add((chunk, 0, true)),
            NullLogger.Instance);

    [Fact]
    public void A_released_chunk_stays_out_for_the_delay_and_is_cleared_as_it_leaves()
    {
        ArenaChunk chunk = UsedChunk(out Memory<byte> escaped);
        chunk.Retire();
        _quarantine.Add(chunk, 1, large: false, chunk.Capacity);

        // A late writer that was inside a use when the request ended writes on meanwhile: nobody else has the chunk.
        Assert.Equal(0, _quarantine.ReleaseExpired());
        Assert.Empty(_returned);
        Assert.Equal(1, _quarantine.Count);
        Assert.Throws<ObjectDisposedException>(() => escaped.Span.Fill(1));

        _time.Advance(Delay - TimeSpan.FromTicks(1));
        Assert.Equal(0, _quarantine.ReleaseExpired());
        Assert.Empty(_returned);
        _time.Advance(TimeSpan.FromTicks(1));   // the timer lets it out

        Assert.Equal((chunk, 1, false), Assert.Single(_returned));
        Assert.Equal(0, chunk.PendingClearBytes);
        Assert.True(chunk.TryRent(4096, 16, out Memory<byte> fresh));
        Assert.False(fresh.Span.ContainsAnyExcept((byte)0));
        Assert.Equal(0, _quarantine.Count);
    }

    [Fact]
    public void Chunks_leave_in_the_order_they_came_each_after_its_own_delay()
    {
        ArenaChunk first = RetiredChunk();
        _quarantine.Add(first, 0, large: false, first.Capacity);
        _time.Advance(TimeSpan.FromMilliseconds(5));
        ArenaChunk second = RetiredChunk();
        _quarantine.Add(second, 0, large: true, second.Capacity);

        _time.Advance(Delay - TimeSpan.FromMilliseconds(5));
        Assert.Equal([first], _returned.Select(r => r.Chunk));
        _time.Advance(TimeSpan.FromMilliseconds(5));
        Assert.Equal([first, second], _returned.Select(r => r.Chunk));
        Assert.True(_returned[1].Large);
        Assert.Equal(0, _quarantine.Count);
    }

    [Fact]
    public void A_pinned_chunk_stays_out_past_its_delay_until_the_pin_is_released()
    {
        ArenaChunk chunk = UsedChunk(out Memory<byte> memory);
        MemoryHandle pin = memory.Pin();
        Assert.True(chunk.IsPinned);
        chunk.Retire();
        _quarantine.Add(chunk, 0, large: false, chunk.Capacity);

        _time.Advance(Delay * 10);
        Assert.Equal(0, _quarantine.ReleaseExpired());
        Assert.Equal(1, _quarantine.PinnedCount);
        Assert.Empty(_returned);
        Assert.False(_quarantine.ReleaseOldest(0));   // not even when the budget is spent

        pin.Dispose();
        Assert.False(chunk.IsPinned);
        Assert.Equal(1, _quarantine.ReleaseExpired());
        Assert.Single(_returned);
        Assert.Equal(0, _quarantine.Count);
    }

    [Fact]
    public void Pins_count_across_uses_and_a_retired_manager_refuses_new_pins()
    {
        ArenaChunk chunk = UsedChunk(out Memory<byte> memory);
        MemoryHandle first = memory.Pin();
        MemoryHandle second = memory[10..].Pin();
        chunk.Retire();
        Assert.Throws<ObjectDisposedException>(() => memory.Pin());

        Assert.True(chunk.TryRent(100, 16, out Memory<byte> next));
        MemoryHandle third = next.Pin();
        first.Dispose();
        second.Dispose();
        Assert.True(chunk.IsPinned);
        third.Dispose();
        Assert.False(chunk.IsPinned);
    }

    [Fact]
    public void When_the_budget_is_spent_the_oldest_chunk_leaves_early_and_is_counted()
    {
        ArenaChunk old = RetiredChunk();
        _quarantine.Add(old, 1, large: false, old.Capacity);
        _time.Advance(TimeSpan.FromMilliseconds(3));
        ArenaChunk young = RetiredChunk();
        _quarantine.Add(young, 0, large: false, young.Capacity);

        // The rent's own lane first: the oldest there.
        Assert.True(_quarantine.ReleaseOldest(1));
        Assert.Equal([old], _returned.Select(r => r.Chunk));
        Assert.Equal(1, _quarantine.EarlyReuses);
        Assert.Equal(0, old.PendingClearBytes);

        // The other leaves after its own delay, not early.
        _time.Advance(Delay);
        Assert.Equal([old, young], _returned.Select(r => r.Chunk));
        Assert.Equal(1, _quarantine.EarlyReuses);
        Assert.False(_quarantine.ReleaseOldest(1));
    }

    [Fact]
    public void A_rent_whose_lane_is_empty_takes_the_oldest_of_the_other_lanes()
    {
        ArenaChunk old = RetiredChunk();
        _quarantine.Add(old, 1, large: false, old.Capacity);
        _time.Advance(TimeSpan.FromMilliseconds(3));
        ArenaChunk young = RetiredChunk();
        _quarantine.Add(young, 1, large: false, young.Capacity);

        Assert.True(_quarantine.ReleaseOldest(0));
        Assert.Equal([old], _returned.Select(r => r.Chunk));
    }

    [Fact]
    public void The_timer_lets_chunks_out_when_no_request_comes()
    {
        ArenaChunk chunk = RetiredChunk();
        _quarantine.Add(chunk, 0, large: false, chunk.Capacity);
        _time.Advance(Delay);
        Assert.Single(_returned);
        Assert.Equal(0, _quarantine.Count);

        // And it is set again for the next chunk.
        ArenaChunk next = RetiredChunk();
        _quarantine.Add(next, 1, large: false, next.Capacity);
        _time.Advance(Delay);
        Assert.Equal(2, _returned.Count);
    }

    [Fact]
    public void Dispose_lets_every_unpinned_chunk_out_at_once_and_later_releases_go_straight_through()
    {
        ArenaChunk chunk = RetiredChunk();
        _quarantine.Add(chunk, 0, large: false, chunk.Capacity);
        _quarantine.Dispose();
        Assert.Single(_returned);

        ArenaChunk late = RetiredChunk();
        _quarantine.Add(late, 0, large: false, late.Capacity);
        Assert.Equal(2, _returned.Count);
        Assert.Equal(0, _quarantine.Count);
    }

    [Fact]
    public void Snapshot_counts_the_chunks_inside_and_their_bytes()
    {
        ArenaChunk a = RetiredChunk();
        ArenaChunk b = RetiredChunk();
        _quarantine.Add(a, 0, large: false, 65_536);
        _quarantine.Add(b, 1, large: true, 262_144);

        Assert.Equal((2, 65_536L + 262_144), _quarantine.Snapshot());
    }

    [Fact]
    public void In_the_pool_a_released_chunk_is_not_reused_within_the_delay_and_the_figures_leave_it_out()
    {
        var meters = new TestMeterFactory();
        var options = new SwitchableAllocatorOptions { MemoryBudget = 4 * 64 * 1024, ReuseDelay = TimeSpan.FromSeconds(10), IdleTrimInterval = TimeSpan.FromHours(1) };
        var chunks = new ArenaChunkSource(options, NativeMemorySource.Shared);
        using var pool = new RequestArenaPool(Microsoft.Extensions.Options.Options.Create(options), chunks, new AllocHostingMetrics(meters, new SwitchableAllocator()), NullLogger<RequestArenaPool>.Instance, _time);

        var context = new DefaultHttpContext();
        RequestArena first = pool.RentArena(context);
        Memory<byte> escaped = first.Rent(100);
        escaped.Span.Fill(0xEE);
        pool.ReturnArena(first, context);
        Assert.Equal(0, pool.ChunksInUse);
        Assert.Equal(0, pool.BytesInUse);
        Assert.Equal(1, pool.QuarantinedChunks);
        Assert.Equal(64 * 1024, pool.QuarantinedBytes);

        // The next requests get other chunks while the first waits out its delay.
        var seen = new List<Memory<byte>>();
        for (int i = 0; i < 3; i++)
        {
            RequestArena next = pool.RentArena(context);
            Memory<byte> memory = next.Rent(100);
            Assert.False(memory.Span.ContainsAnyExcept((byte)0));
            seen.Add(memory);
            pool.ReturnArena(next, context);
        }

        Assert.Equal(4, chunks.ChunkCount);
        Assert.Equal(0, pool.EarlyReuses);

        // The budget is spent now (four chunks, all in quarantine): the oldest comes back early, cleared.
        RequestArena fifth = pool.RentArena(context);
        Memory<byte> reused = fifth.Rent(100);
        Assert.False(reused.Span.ContainsAnyExcept((byte)0));
        Assert.Equal(1, pool.EarlyReuses);
        Assert.Equal(4, chunks.ChunkCount);
        pool.ReturnArena(fifth, context);
    }

    [Fact]
    public async Task A_rent_waiting_for_the_budget_gets_a_released_chunk_without_waiting_out_the_delay()
    {
        var meters = new TestMeterFactory();
        var options = new SwitchableAllocatorOptions
        {
            MemoryBudget = 64 * 1024,
            MaxArenaSizePerRequest = 64 * 1024,
            ReuseDelay = TimeSpan.FromSeconds(10),
            BudgetWaitTimeout = TimeSpan.FromSeconds(5),
            IdleTrimInterval = TimeSpan.FromHours(1),
        };
        var chunks = new ArenaChunkSource(options, NativeMemorySource.Shared);
        using var pool = new RequestArenaPool(Microsoft.Extensions.Options.Options.Create(options), chunks, new AllocHostingMetrics(meters, new SwitchableAllocator()), NullLogger<RequestArenaPool>.Instance, _time);
        var holderContext = new DefaultHttpContext();
        var waiterContext = new DefaultHttpContext();
        RequestArena holder = pool.RentArena(holderContext);
        holder.Rent(100).Span.Fill(0xEE);
        RequestArena waiter = pool.RentArena(waiterContext);

        ValueTask<Memory<byte>> waiting = waiter.RentAsync(100);
        Assert.False(waiting.IsCompleted);
        pool.ReturnArena(holder, holderContext);

        Memory<byte> memory = await waiting.AsTask().WaitAsync(TimeSpan.FromSeconds(2));
        Assert.False(memory.Span.ContainsAnyExcept((byte)0));
        Assert.Equal(1, pool.EarlyReuses);
        pool.ReturnArena(waiter, waiterContext);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)]
    public async Task In_the_pool_a_chunk_pinned_past_its_request_is_not_reused_until_unpinned(int delayMilliseconds)
    {
        var meters = new TestMeterFactory();
        var options = new SwitchableAllocatorOptions { MemoryBudget = 8 * 64 * 1024, ReuseDelay = TimeSpan.FromMilliseconds(delayMilliseconds), IdleTrimInterval = TimeSpan.FromHours(1) };
        var chunks = new ArenaChunkSource(options, NativeMemorySource.Shared);
        using var pool = new RequestArenaPool(Microsoft.Extensions.Options.Options.Create(options), chunks, new AllocHostingMetrics(meters, new SwitchableAllocator()), NullLogger<RequestArenaPool>.Instance, _time);
        var context = new DefaultHttpContext();

        // A request hands its memory to an asynchronous write (a pin) and ends before the write completes.
        RequestArena first = pool.RentArena(context);
        Memory<byte> inFlight = first.Rent(1000);
        MemoryHandle pin = inFlight.Pin();
        pool.ReturnArena(first, context);

        await Task.Delay(delayMilliseconds + 50);
        for (int i = 0; i < 5; i++)
        {
            RequestArena next = pool.RentArena(context);
            next.Rent(1000).Span.Fill(7);
            pool.ReturnArena(next, context);
        }

        Assert.True(chunks.ChunkCount >= 2, "the pinned chunk was handed to another request");
        await TestApp.EventuallyAsync(() => pool.QuarantinedChunks == 1, "only the pinned chunk is left in the quarantine");
        unsafe
        {
            // The operation still holds the memory: it may write it, and nobody else has it.
            new Span<byte>(pin.Pointer, 1000).Fill(0xEE);
        }

        pin.Dispose();
        await TestApp.EventuallyAsync(() => pool.QuarantinedChunks == 0, "the unpinned chunk left the quarantine");
        RequestArena later = pool.RentArena(context);
        for (int i = 0; i < 3; i++)
        {
            Assert.False(later.Rent(1000).Span.ContainsAnyExcept((byte)0));
        }

        pool.ReturnArena(later, context);
    }

    public void Dispose()
    {
        _quarantine.Dispose();
        foreach (ArenaChunk chunk in _chunks)
        {
            chunk.Dispose();
        }
    }

    private ArenaChunk UsedChunk(out Memory<byte> memory)
    {
        var chunk = ArenaChunk.CreateBump(NativeMemorySource.Shared, 64 * 1024, zero: true);
        _chunks.Add(chunk);
        Assert.True(chunk.TryRent(4096, 16, out memory));
        memory.Span.Fill(0xAB);
        return chunk;
    }

    private ArenaChunk RetiredChunk()
    {
        ArenaChunk chunk = UsedChunk(out _);
        chunk.Retire();
        return chunk;
    }
}
