using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

public class ArenaChunkTests
{
    [Theory]
    [InlineData(ArenaChunkKind.Bump)]
    [InlineData(ArenaChunkKind.BitSet)]
    public void Rent_slices_one_manager_and_release_retires_it(ArenaChunkKind kind)
    {
        using ArenaChunk chunk = Create(kind);
        Assert.True(chunk.TryRent(100, 16, out Memory<byte> first));
        Assert.True(chunk.TryRent(100, 16, out Memory<byte> second));
        first.Span.Fill(1);
        second.Span.Fill(2);

        Assert.False(first.Span.ContainsAnyExcept((byte)1));
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetMemoryManager<byte, System.Buffers.MemoryManager<byte>>(first, out System.Buffers.MemoryManager<byte>? a));
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetMemoryManager<byte, System.Buffers.MemoryManager<byte>>(second, out System.Buffers.MemoryManager<byte>? b));
        Assert.Same(a, b);

        chunk.Release(clear: true);

        Assert.Throws<ObjectDisposedException>(() => first.Span.Length);
        Assert.True(chunk.TryRent(100, 16, out Memory<byte> next));
        Assert.False(next.Span.ContainsAnyExcept((byte)0));
    }

    [Theory]
    [InlineData(ArenaChunkKind.Bump)]
    [InlineData(ArenaChunkKind.BitSet)]
    public void Release_clears_exactly_the_high_water_and_reports_it(ArenaChunkKind kind)
    {
        using ArenaChunk chunk = Create(kind);

        // A first use dirties the whole chunk and is released without clearing, so that bytes
        // beyond the next use's high water are 0xEE: a release that cleared them would show.
        Assert.True(chunk.TryRent(chunk.Capacity, 16, out Memory<byte> whole));
        whole.Span.Fill(0xEE);
        chunk.Release(clear: false);

        Assert.True(chunk.TryRent(1000, 16, out Memory<byte> used));
        used.Span.Fill(0xFF);

        long highWater = chunk.Release(clear: true);

        Assert.InRange(highWater, 1000, 1024);
        Assert.True(chunk.TryRent(chunk.Capacity, 16, out Memory<byte> all));
        Assert.Equal(chunk.Capacity, all.Length);
        int zeroes = (int)highWater;
        int dirty = all.Span[..zeroes].IndexOfAnyExcept((byte)0);
        Assert.True(dirty < 0, $"byte {dirty}, below the high water {highWater}, was not cleared");
        int cleared = all.Span[zeroes..].IndexOfAnyExcept((byte)0xEE);
        Assert.True(cleared < 0, $"byte {zeroes + cleared}, at or beyond the high water {highWater}, was touched by the release");
    }

    [Fact]
    public void Release_without_clear_leaves_the_bytes()
    {
        using ArenaChunk chunk = Create(ArenaChunkKind.Bump);
        chunk.TryRent(100, 16, out Memory<byte> used);
        used.Span.Fill(0xFF);

        chunk.Release(clear: false);

        chunk.TryRent(100, 16, out Memory<byte> again);
        Assert.False(again.Span.ContainsAnyExcept((byte)0xFF));
    }

    [Fact]
    public void A_full_chunk_refuses_and_changes_nothing()
    {
        using ArenaChunk chunk = Create(ArenaChunkKind.Bump);
        Assert.True(chunk.TryRent(chunk.Capacity, 16, out _));
        long used = chunk.Used;

        Assert.False(chunk.TryRent(1, 1, out Memory<byte> none));

        Assert.True(none.IsEmpty);
        Assert.Equal(used, chunk.Used);
    }

    [Fact]
    public void Typed_managers_are_retired_too()
    {
        using ArenaChunk chunk = Create(ArenaChunkKind.Bump);
        Assert.True(chunk.TryRent(10, out Memory<int> ints));
        ints.Span[9] = 42;

        chunk.Release(clear: true);

        Assert.Throws<ObjectDisposedException>(() => ints.Span[0]);
    }

    [Fact]
    public void Concurrent_rents_from_a_bump_chunk_never_overlap()
    {
        using ArenaChunk chunk = Create(ArenaChunkKind.Bump);
        var all = new System.Collections.Concurrent.ConcurrentBag<(int Thread, Memory<byte> Memory)>();

        Parallel.For(0, 4, thread =>
        {
            while (chunk.TryRent(40, 8, out Memory<byte> memory))
            {
                memory.Span.Fill((byte)(thread + 1));
                all.Add((thread, memory));
            }
        });

        Assert.All(all, item => Assert.False(item.Memory.Span.ContainsAnyExcept((byte)(item.Thread + 1))));
        Assert.Equal(64 * 1024 / 40, all.Count);
    }

    // The owner's guard (a request arena's lease): a rent, typed rent or window of the expected guard
    // is served; once the owner changed it (as it does before it ends the use), each fails taking
    // nothing, and counts no failure; under the expected value again (another use) they serve.
    [Theory]
    [InlineData(ArenaChunkKind.Bump)]
    [InlineData(ArenaChunkKind.BitSet)]
    public void Guarded_rents_and_windows_take_nothing_once_the_guard_changed(ArenaChunkKind kind)
    {
        using ArenaChunk chunk = Create(kind);
        int guard = 1;
        Assert.True(chunk.TryRent(100, 16, in guard, 1, out Memory<byte> bytes));
        Assert.True(chunk.TryRent(10, in guard, 1, out Memory<long> values));
        Assert.True(chunk.TryReserveWindow(64, 4096, in guard, 1, out Memory<byte> whole, out int offset, out int length));
        bytes.Span.Fill(1);
        values.Span.Fill(2);
        whole.Slice(offset, length).Span.Fill(3);
        long used = chunk.Used;
        AllocatorStatistics statistics = chunk.Statistics;

        guard = 3;   // the owner ends the use of guard 1
        Assert.False(chunk.TryRent(100, 16, in guard, 1, out Memory<byte> late));
        Assert.True(late.IsEmpty);
        Assert.False(chunk.TryRent(10, in guard, 1, out Memory<long> lateValues));
        Assert.True(lateValues.IsEmpty);
        Assert.False(chunk.TryReserveWindow(64, 4096, in guard, 1, out Memory<byte> lateWhole, out _, out int lateLength));
        Assert.True(lateWhole.IsEmpty);
        Assert.Equal(0, lateLength);
        Assert.Equal(used, chunk.Used);
        Assert.Equal(statistics.FailureCount, chunk.Statistics.FailureCount);
        Assert.Equal(statistics.AllocationCount, chunk.Statistics.AllocationCount);

        Assert.True(chunk.TryRent(100, 16, in guard, 3, out Memory<byte> current));
        current.Span.Fill(4);
        Assert.True(chunk.Used > used);
        Assert.False(bytes.Span.ContainsAnyExcept((byte)1));
    }

    // The race the guard is for: a late renter read the chunk, the owner changed its guard and retired
    // the use, and the carve comes after. With the guard it takes nothing of the next use (whose
    // offset starts at zero); without it the same carve would take the start of the next use.
    [Theory]
    [InlineData(ArenaChunkKind.Bump)]
    [InlineData(ArenaChunkKind.BitSet)]
    public void A_guarded_carve_after_the_use_ended_leaves_the_next_use_whole(ArenaChunkKind kind)
    {
        using ArenaChunk chunk = Create(kind);
        int lease = 1;
        Assert.True(chunk.TryRent(1000, 16, in lease, 1, out _));
        lease = 3;
        chunk.Retire();
        chunk.DropPending();

        Assert.False(chunk.TryRent(1000, 16, in lease, 1, out _));
        Assert.False(chunk.TryReserveWindow(64, 4096, in lease, 1, out _, out _, out _));
        Assert.Equal(0, chunk.Used);
        Assert.True(chunk.TryRent(chunk.Capacity, 16, in lease, 3, out Memory<byte> whole));
        Assert.Equal(chunk.Capacity, whole.Length);
    }

    [Fact]
    public void Dispose_gives_the_region_back_to_the_source()
    {
        using var slots = new ArenaMemorySource(NativeMemorySource.Shared, 64 * 1024, slotCount: 2);
        ArenaChunk chunk = ArenaChunk.CreateBump(slots, 64 * 1024);
        Assert.Equal(1, slots.FreeSlotCount);

        chunk.Dispose();
        chunk.Dispose();

        Assert.Equal(2, slots.FreeSlotCount);
    }

    private static ArenaChunk Create(ArenaChunkKind kind) =>
        kind == ArenaChunkKind.Bump
            ? ArenaChunk.CreateBump(NativeMemorySource.Shared, 64 * 1024, zero: true)
            : ArenaChunk.CreateBitSet(NativeMemorySource.Shared, 64 * 1024, 64, zero: true);
}
