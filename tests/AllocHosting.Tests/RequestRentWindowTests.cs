using AllocHosting.Allocators;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace AllocHosting.Tests;

/// <summary>
/// The per-thread rent windows of the request arena (issue 12): byte rents bump in a window of the
/// calling thread without a locked instruction. The model: every rent of a request is a range of
/// its chunks that no other rent of the request overlaps, whatever thread or task rents it; a
/// window never serves a request other than the one (arena and lease) it was reserved for; the
/// clearing covers every byte a window reserved; the rents and the bytes rented are counted exactly
/// once the request is released.
/// </summary>
public sealed class RequestRentWindowTests : IDisposable
{
    private readonly TestMeterFactory _meters = new();

    public void Dispose() => _meters.Dispose();

    [Fact]
    public void Rents_on_one_thread_are_carved_one_after_another_from_its_window()
    {
        using RequestArenaPool pool = CreatePool();
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        int lease = arena.Lease;

        Memory<byte> first = arena.Rent(64, lease);    // takes the chunk
        Memory<byte> second = arena.Rent(100, lease);  // reserves the thread's window
        Memory<byte> third = arena.Rent(32, lease);    // bumps in it
        Memory<byte> fourth = arena.Rent(1, lease);

        Assert.Equal(112, Distance(second, third));     // 100 rounded up to the 16-byte alignment
        Assert.Equal(32, Distance(third, fourth));
        Assert.True(Distance(first, second) >= 64);
        Assert.Equal(64 + 112 + 32 + 1, arena.GetUsed(lease));   // the window's unrented tail is not usage

        pool.ReturnArena(arena, context);
        Assert.Equal(4, pool.RentCount);
        Assert.Throws<ObjectDisposedException>(() => third.Span[0] = 1);
    }

    [Fact]
    public void A_bit_set_arena_serves_rents_from_a_window_too_one_lock_per_window()
    {
        using RequestArenaPool pool = CreatePool(kind: RequestArenaKind.BitSet);
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        int lease = arena.Lease;
        arena.Rent(64, lease);
        Memory<byte> second = arena.Rent(100, lease);
        Memory<byte> third = arena.Rent(20, lease);
        second.Span.Fill(1);
        third.Span.Fill(2);

        Assert.Equal(112, Distance(second, third));   // bumped in the window, not a block search each
        Assert.True(second.Span.IndexOfAnyExcept((byte)1) < 0);
        pool.ReturnArena(arena, context);
        Assert.Equal(3, pool.RentCount);
        Assert.Equal(0, pool.LiveBytes);
    }

    [Fact]
    public async Task A_flow_that_moves_between_threads_keeps_every_rent_apart_and_counted()
    {
        using RequestArenaPool pool = CreatePool();
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        int lease = arena.Lease;
        var rents = new List<Memory<byte>>();
        var threads = new HashSet<int>();
        long rented = 0;
        for (int i = 0; i < 200; i++)
        {
            int length = 16 * (1 + (i % 7));
            Memory<byte> memory = arena.Rent(length, lease);
            memory.Span.Fill((byte)i);
            rents.Add(memory);
            rented += length;
            threads.Add(Environment.CurrentManagedThreadId);
            if (i % 3 == 0)
            {
                await Task.Yield();   // resumes on a pool thread, often another one
            }
            else if (i % 3 == 1)
            {
                await Task.Run(() => { });
            }
        }

        for (int i = 0; i < rents.Count; i++)
        {
            Assert.True(rents[i].Span.IndexOfAnyExcept((byte)i) < 0, $"rent {i} was overwritten by another rent");
        }

        Assert.Equal(rented, arena.GetUsed(lease));
        pool.ReturnArena(arena, context);
        Assert.Equal(200, pool.RentCount);
    }

    [Fact]
    public async Task Concurrent_tasks_of_one_request_never_overlap_and_no_rent_is_lost()
    {
        const int Tasks = 8;
        const int RentsPerTask = 300;
        using RequestArenaPool pool = CreatePool(chunkSize: 256 * 1024, maxPerRequest: 4 * 1024 * 1024);
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        int lease = arena.Lease;
        var started = DateTime.UtcNow;

        var all = await Task.WhenAll(Enumerable.Range(0, Tasks).Select(t => Task.Run(async () =>
        {
            var mine = new List<Memory<byte>>(RentsPerTask);
            for (int i = 0; i < RentsPerTask && DateTime.UtcNow - started < TimeSpan.FromSeconds(5); i++)
            {
                Memory<byte> memory = arena.Rent(1 + ((i * 37 + t) % 700), lease);
                memory.Span.Fill((byte)(t + 1));
                mine.Add(memory);
                if (i % 50 == 0)
                {
                    await Task.Yield();
                }
            }

            return mine;
        })));

        // Only once every task has written is any rent checked: an overlap shows another task's byte.
        long rented = 0;
        int count = 0;
        for (int t = 0; t < Tasks; t++)
        {
            foreach (Memory<byte> memory in all[t])
            {
                Assert.True(memory.Span.IndexOfAnyExcept((byte)(t + 1)) < 0, $"a rent of task {t} overlaps another task's");
                rented += memory.Length;
                count++;
            }
        }

        Assert.True(arena.GetUsed(lease) >= rented);
        pool.ReturnArena(arena, context);
        Assert.Equal(count, pool.RentCount);
    }

    [Fact]
    public void A_request_whose_rents_ran_on_more_threads_than_window_slots_counts_every_rent_at_its_release()
    {
        // Twelve threads, each with a window of its own for the one request: more than the arena's
        // registered slots, so four go on the list past them. Every rent is counted when the request ends.
        const int Threads = 12;
        const int RentsPerThread = 100;
        using RequestArenaPool pool = CreatePool(chunkSize: 256 * 1024, maxPerRequest: 4 * 1024 * 1024);
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        int lease = arena.Lease;
        var rents = new List<Memory<byte>>[Threads];
        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            rents[t] = [];
            for (int i = 0; i < RentsPerThread; i++)
            {
                Memory<byte> memory = arena.Rent(1 + ((i * 13 + t) % 300), lease);
                memory.Span.Fill((byte)(t + 1));
                rents[t].Add(memory);
            }
        })).ToList();
        threads.ForEach(thread => thread.Start());
        threads.ForEach(thread => thread.Join());

        long rented = 0;
        for (int t = 0; t < Threads; t++)
        {
            foreach (Memory<byte> memory in rents[t])
            {
                Assert.True(memory.Span.IndexOfAnyExcept((byte)(t + 1)) < 0, $"a rent of thread {t} overlaps another thread's");
                rented += memory.Length;
            }
        }

        Assert.True(arena.GetUsed(lease) >= rented);
        pool.ReturnArena(arena, context);
        Assert.Equal(Threads * RentsPerThread, pool.RentCount);
    }

    [Fact]
    public void Windows_registering_past_the_slots_while_the_request_ends_count_the_rents_served_within_one_per_thread_and_leak_nothing()
    {
        // Twelve threads make their first rents of a request (four register past the slots, under the
        // chain lock) while the request ends on the test thread. Whatever the interleaving: no exception
        // but the refusal, no live bytes or active arena after the release, and the rents counted are the
        // rents served, give or take one per thread (the rent each may have had in flight at the end).
        const int Threads = 12;
        const int Rounds = 40;
        using RequestArenaPool pool = CreatePool(chunkSize: 256 * 1024, maxPerRequest: 4 * 1024 * 1024);
        var context = new DefaultHttpContext();
        for (int round = 0; round < Rounds; round++)
        {
            RequestArena arena = pool.RentArena(context);
            int lease = arena.Lease;
            long countedBefore = pool.RentCount;
            int served = 0;
            Exception? unexpected = null;
            using var start = new Barrier(Threads + 1);
            var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
            {
                start.SignalAndWait();
                for (int i = 0; i < 200; i++)
                {
                    try
                    {
                        arena.Rent(1 + ((i * 7 + t) % 200), lease);
                        Interlocked.Increment(ref served);
                    }
                    catch (InvalidOperationException)
                    {
                        return;   // the request ended: refused, as every later rent is
                    }
                    catch (Exception error)
                    {
                        unexpected ??= error;
                        return;
                    }
                }
            })).ToList();
            threads.ForEach(thread => thread.Start());
            start.SignalAndWait();
            Thread.SpinWait(50 * (round % 20));
            pool.ReturnArena(arena, context);
            threads.ForEach(thread => Assert.True(thread.Join(TimeSpan.FromSeconds(10)), "a renter did not stop"));

            Assert.Null(unexpected);
            Assert.Equal(0, pool.LiveBytes);
            Assert.Equal(0, pool.ActiveArenas);
            long counted = pool.RentCount - countedBefore;
            Assert.InRange(counted, served - Threads, served + Threads);
        }
    }

    [Fact]
    public void A_window_left_from_a_released_request_never_serves_the_next_request_of_the_same_arena()
    {
        using RequestArenaPool pool = CreatePool();
        var context = new DefaultHttpContext();
        RequestArena first = pool.RentArena(context);
        int oldLease = first.Lease;
        first.Rent(64, oldLease);
        Memory<byte> old = first.Rent(64, oldLease);   // this thread's window now belongs to the first request
        pool.ReturnArena(first, context);

        // The same arena object and, with no delay, the same chunk serve the next request on this thread.
        RequestArena second = pool.RentArena(context);
        Assert.Same(first, second);
        int lease = second.Lease;
        Assert.Throws<InvalidOperationException>(() => second.Rent(64, oldLease));
        Memory<byte> fresh = second.Rent(64, lease);
        Memory<byte> next = second.Rent(64, lease);
        fresh.Span.Fill(7);
        next.Span.Fill(8);

        // The old flow's memory is retired, and still refused after the new request keyed the window.
        Assert.Throws<ObjectDisposedException>(() => old.Span[0] = 1);
        Assert.Throws<InvalidOperationException>(() => second.Rent(64, oldLease));
        Assert.Equal(64 + 64, second.GetUsed(lease));
        pool.ReturnArena(second, context);
        Assert.Throws<InvalidOperationException>(() => second.Rent(64, lease));
        Assert.Equal(4, pool.RentCount);
    }

    [Fact]
    public void A_window_of_a_request_that_ended_on_another_thread_is_re_keyed_by_the_next_request_of_the_arena()
    {
        using RequestArenaPool pool = CreatePool();
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        int oldLease = arena.Lease;
        arena.Rent(64, oldLease);
        Memory<byte> old = arena.Rent(64, oldLease);   // keys this thread's window

        // The request ends on another thread, whose spare the arena becomes; the arena's next request
        // starts there too, and then rents on this thread, whose window still holds the old key.
        RequestArena? next = null;
        var other = new Thread(() =>
        {
            pool.ReturnArena(arena, context);
            next = pool.RentArena(context);
        });
        other.Start();
        other.Join();
        Assert.Same(arena, next);
        int lease = next!.Lease;
        Assert.NotEqual(oldLease, lease);
        Assert.Throws<InvalidOperationException>(() => arena.Rent(16, oldLease));
        Memory<byte> a = next.Rent(48, lease);
        Memory<byte> b = next.Rent(48, lease);
        a.Span.Fill(1);
        b.Span.Fill(2);
        Assert.True(a.Span.IndexOfAnyExcept((byte)1) < 0);
        Assert.Throws<ObjectDisposedException>(() => old.Span[0] = 1);
        Assert.Throws<InvalidOperationException>(() => next.Rent(16, oldLease));
        pool.ReturnArena(next, context);
        Assert.Equal(4, pool.RentCount);
    }

    [Fact]
    public void Clearing_covers_the_unrented_tail_of_a_window_too()
    {
        using RequestArenaPool pool = CreatePool(clear: true);
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        int lease = arena.Lease;
        arena.Rent(64, lease);
        Memory<byte> rented = arena.Rent(64, lease);   // the window holds at least its first size

        // A writer that runs past its rent (a bug the clearing is there to contain) writes into the
        // window's tail, which no rent handed out.
        Span<byte> overrun = MemoryMarshal.CreateSpan(ref rented.Span[0], RequestRentWindow.FirstSize);
        overrun.Fill(0xAB);
        pool.ReturnArena(arena, context);

        // The next request takes the same chunk (no delay: the processor slot's hot chunk); all of it is zero.
        RequestArena next = pool.RentArena(context);
        Memory<byte> whole = next.Rent(pool.ChunkCapacity, next.Lease);
        Assert.True(whole.Span.IndexOfAnyExcept((byte)0) < 0, "bytes a window reserved were not cleared");
        pool.ReturnArena(next, context);
    }

    [Fact]
    public void Rents_past_a_full_chunk_chain_the_next_one_and_keep_their_bytes()
    {
        using RequestArenaPool pool = CreatePool();
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        int lease = arena.Lease;
        var rents = new List<Memory<byte>>();
        long rented = 0;
        for (int i = 0; rented < 3L * pool.ChunkCapacity; i++)
        {
            int length = 16 * (1 + (i % 100));
            Memory<byte> memory = arena.Rent(length, lease);
            memory.Span.Fill((byte)i);
            rents.Add(memory);
            rented += length;
        }

        for (int i = 0; i < rents.Count; i++)
        {
            Assert.True(rents[i].Span.IndexOfAnyExcept((byte)i) < 0);
        }

        Assert.True(arena.GetCapacity(lease) >= rented);
        pool.ReturnArena(arena, context);
        Assert.Equal(rents.Count, pool.RentCount);
        Assert.Equal(0, pool.LiveBytes);
    }

    private static long Distance(Memory<byte> from, Memory<byte> to) =>
        (long)Unsafe.ByteOffset(ref MemoryMarshal.GetReference(from.Span), ref MemoryMarshal.GetReference(to.Span));

    [Fact]
    public void A_rent_sized_to_a_fresh_chunk_succeeds_when_a_late_renter_of_its_last_use_took_bytes_of_it()
    {
        using RequestArenaPool pool = CreatePool();   // 64 KiB pool chunks, no quarantine
        var context = new DefaultHttpContext();
        RequestArena first = pool.RentArena(context);
        first.Rent(100_000, first.Lease);   // a large chunk of the 128 KiB class
        ArenaChunk stolen = LargeChunksOf(first).Single();
        pool.ReturnArena(first, context);

        // A late renter that read the chunk before that release carves after it (lock-free; its rent
        // is then refused by the lease check, but its bytes stay taken until the chunk's next release).
        Assert.True(stolen.TryRent(4_000, 16, out _));

        RequestArena second = pool.RentArena(context);
        int lease = second.Lease;
        Memory<byte> sized = second.Rent(stolen.Capacity, lease);   // the class of that same chunk

        sized.Span.Fill(0x5A);
        Assert.Equal(stolen.Capacity, sized.Length);
        List<ArenaChunk> held = LargeChunksOf(second);
        Assert.Contains(stolen, held);      // the pool handed the robbed chunk out first ...
        Assert.Equal(2, held.Count);        // ... and the rent took one more instead of failing
        pool.ReturnArena(second, context);
    }

    [Fact]
    public async Task A_waiting_rent_sized_to_a_fresh_chunk_succeeds_when_a_late_renter_of_its_last_use_took_bytes_of_it()
    {
        // The same robbery as above, met by RentAsync (the path of body reads, streams and writers).
        using RequestArenaPool pool = CreatePool();
        var context = new DefaultHttpContext();
        RequestArena first = pool.RentArena(context);
        await first.RentAsync(100_000, first.Lease, CancellationToken.None);
        ArenaChunk stolen = LargeChunksOf(first).Single();
        pool.ReturnArena(first, context);
        Assert.True(stolen.TryRent(4_000, 16, out _));

        RequestArena second = pool.RentArena(context);
        Memory<byte> sized = await second.RentAsync(stolen.Capacity, second.Lease, CancellationToken.None);

        sized.Span.Fill(0x5A);
        Assert.Equal(stolen.Capacity, sized.Length);
        List<ArenaChunk> held = LargeChunksOf(second);
        Assert.Contains(stolen, held);
        Assert.Equal(2, held.Count);
        pool.ReturnArena(second, context);
        Assert.Equal(0, pool.LiveBytes);
    }

    [Fact]
    public async Task A_first_rent_racing_the_release_of_a_request_that_rented_nothing_is_refused_or_released_never_kept()
    {
        // The release of a request that took no lock in its use skips the chain lock (issue 12): it
        // advances the lease, then reads whether any section engaged. A first rent racing with it
        // must either be refused or have its chunk released by that release: never a chunk left on
        // the pooled arena, live bytes after the last release, or an active arena counted.
        using RequestArenaPool pool = CreatePool();
        var context = new DefaultHttpContext();
        int rented = 0;
        int refused = 0;
        for (int i = 0; i < 2_000; i++)
        {
            RequestArena arena = pool.RentArena(context);
            int lease = arena.Lease;
            using var start = new Barrier(2);
            Memory<byte> won = default;
            Task renter = Task.Run(() =>
            {
                start.SignalAndWait();
                try
                {
                    won = arena.Rent(64 + (i % 512), lease);
                    Interlocked.Increment(ref rented);
                }
                catch (InvalidOperationException)
                {
                    Interlocked.Increment(ref refused);
                }
            });

            start.SignalAndWait();
            pool.ReturnArena(arena, context);
            await renter;
            Assert.Equal(0, pool.LiveBytes);
            Assert.Equal(0, pool.ActiveArenas);
            if (!won.IsEmpty)
            {
                // A rent that won the race got memory of the released use: it escapes nothing.
                Assert.Throws<ObjectDisposedException>(() => won.Span[0] = 1);
            }
        }

        Assert.Equal(2_000, rented + refused);
    }

    private static List<ArenaChunk> LargeChunksOf(RequestArena arena) =>
        (List<ArenaChunk>)typeof(RequestArena).GetField("_large", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(arena)!;

    private RequestArenaPool CreatePool(int chunkSize = 64 * 1024, long maxPerRequest = 1024 * 1024, bool clear = false, RequestArenaKind kind = RequestArenaKind.Bump)
    {
        var options = new SwitchableAllocatorOptions
        {
            ArenaKind = kind,
            ReuseDelay = TimeSpan.Zero,
            ClearPolicy = clear ? ArenaClearPolicy.ClearUsed : ArenaClearPolicy.None,
            InitialArenaSize = chunkSize,
            MaxArenaSizePerRequest = maxPerRequest,
            MemoryBudget = 64L * chunkSize,
        };
        return new(
            Options.Create(options),
            ArenaChunkSource.ForThisMachine(options, NullLogger.Instance),
            new AllocHostingMetrics(_meters, new SwitchableAllocator()),
            NullLogger<RequestArenaPool>.Instance,
            TimeProvider.System);
    }
}
