using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

public class RequestBuffersTests
{
    [Fact]
    public async Task Used_and_Capacity_of_buffers_kept_past_their_request_throw_instead_of_showing_another_requests_figures()
    {
        IRequestBuffers? kept = null;
        var second = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapGet("/first", (IRequestBuffers buffers) =>
            {
                buffers.Rent(100);
                kept = buffers;
                return $"{buffers.Used >= 100} {buffers.Capacity > 0}";
            });
            a.MapGet("/second", (IRequestBuffers buffers) =>
            {
                buffers.Rent(5000);   // very likely on the arena object the first request used
                bool usedThrows = Throws(() => _ = kept!.Used);
                bool capacityThrows = Throws(() => _ = kept!.Capacity);
                return $"{usedThrows} {capacityThrows} {buffers.Used >= 5000}";
            });
        });

        Assert.Equal("True True", await app.Client.GetStringAsync("/first"));
        Assert.Equal("True True True", await app.Client.GetStringAsync("/second"));

        static bool Throws(Action action)
        {
            try
            {
                action();
                return false;
            }
            catch (InvalidOperationException)
            {
                return true;
            }
        }
    }

    [Fact]
    public async Task Renting_outside_a_request_throws_InvalidOperationException()
    {
        await using var app = await TestApp.StartAsync(_ => { });
        using IServiceScope scope = app.Services.CreateScope();
        IRequestBuffers buffers = scope.ServiceProvider.GetRequiredService<IRequestBuffers>();

        var error = Assert.Throws<InvalidOperationException>(() => buffers.Rent(10));

        Assert.Contains("no active request arena", error.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => buffers.CreateWriter());
    }

    [Fact]
    public async Task Renting_from_work_that_outlives_the_request_throws_InvalidOperationException()
    {
        IRequestBuffers? kept = null;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            buffers.Rent(10);
            kept = buffers;
            return "ok";
        }));

        await app.Client.GetStringAsync("/");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        // The pooled arena now serves another request: the stale buffers must not rent from it.
        await app.Client.GetStringAsync("/");

        Exception? error = await Task.Run(() => Record.Exception(() => kept!.Rent(10)));
        Assert.IsType<InvalidOperationException>(error);
    }

    [Fact]
    public async Task Invalid_lengths_throw_ArgumentOutOfRangeException()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => buffers.Rent(-1));
            Assert.Throws<ArgumentOutOfRangeException>(() => buffers.Rent<long>(-1));
            Assert.Throws<ArgumentOutOfRangeException>(() => buffers.Rent<long>(int.MaxValue));
            return buffers.Rent(0).Length + buffers.Rent<int>(0).Length;
        }));

        Assert.Equal("0", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Rent_of_T_is_aligned_for_T_and_holds_values()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            buffers.Rent(3); // misalign the offset
            Memory<long> longs = buffers.Rent<long>(100);
            Memory<Vector3Like> odd = buffers.Rent<Vector3Like>(50); // 12-byte elements
            for (int i = 0; i < 100; i++)
            {
                longs.Span[i] = i * 3L;
            }

            for (int i = 0; i < 50; i++)
            {
                odd.Span[i] = new Vector3Like(i, i + 1, i + 2);
            }

            nint address = Unsafe.ByteOffset(ref Unsafe.NullRef<byte>(), ref Unsafe.As<long, byte>(ref MemoryMarshal.GetReference(longs.Span)));
            Assert.Equal(0, address % sizeof(long));

            Assert.Equal(99 * 3L, longs.Span[99]);
            Assert.Equal(new Vector3Like(49, 50, 51), odd.Span[49]);
            Assert.Equal(100, longs.Length);
            Assert.Equal(50, odd.Length);
            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Renting_allocates_nothing_on_the_GC_heap()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            buffers.Rent(16); // resolves the arena and takes the first chunk
            buffers.Rent<int>(4);
            long before = GC.GetAllocatedBytesForCurrentThread();
            int total = 0;
            for (int i = 0; i < 1000; i++)
            {
                total += buffers.Rent(32).Length + buffers.Rent<int>(2).Length;
            }

            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            return $"{total} {allocated}";
        }));

        Assert.Equal("34000 0", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Used_and_Capacity_report_the_requests_figures()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            long before = buffers.Capacity;
            buffers.Rent(1000);
            return $"{before} {buffers.Used >= 1000} {buffers.Capacity}";
        }));

        Assert.Equal("0 True 65536", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Rents_beyond_the_first_chunk_chain_further_chunks()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (IRequestBuffers buffers) =>
            {
                var all = Enumerable.Range(0, 10).Select(i => buffers.Rent(6000)).ToList();
                foreach (var (memory, i) in all.Select((m, i) => (m, i)))
                {
                    memory.Span.Fill((byte)i);
                }

                bool intact = all.Select((m, i) => !m.Span.ContainsAnyExcept((byte)i)).All(x => x);
                return $"{intact} {buffers.Capacity}";
            }),
            options =>
            {
                options.InitialArenaSize = 16 * 1024;
                options.MaxArenaSizePerRequest = 64 * 1024;
            });

        // 10 × 6000 B in 16 KiB chunks (two rents each): the 5th chunk goes beyond the maximum of 4,
        // and under FallBack the pool still serves it (within the budget).
        string[] result = (await app.Client.GetStringAsync("/")).Split(' ');
        Assert.Equal("True", result[0]);
        Assert.Equal(5 * 16 * 1024, long.Parse(result[1], System.Globalization.CultureInfo.InvariantCulture));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "every chunk is released");
        Assert.Equal(5, app.Chunks.ChunkCount);
    }

    [Fact]
    public async Task A_rent_larger_than_a_chunk_takes_a_large_chunk_of_the_pool_that_the_next_request_reuses()
    {
        long committedDuringRequest = 0;
        RequestArenaPool? pool = null;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            Memory<byte> big = buffers.Rent(200_000);
            bool zero = !big.Span.ContainsAnyExcept((byte)0);
            big.Span.Fill(9);
            committedDuringRequest = pool!.CommittedBytes;
            return $"{big.Length} {zero}";
        }),
        options => options.ReuseDelay = TimeSpan.Zero);   // the next request reuses the chunk at once
        pool = app.Pool;

        Assert.Equal("200000 True", await app.Client.GetStringAsync("/"));
        Assert.Equal(256 * 1024, committedDuringRequest);   // the 256 KiB class, counted against the budget
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the large chunk is back");
        Assert.Equal(256 * 1024, app.Pool.CommittedBytes);  // kept warm, not freed

        // The next request gets the same chunk, cleared.
        Assert.Equal("200000 True", await app.Client.GetStringAsync("/"));
        Assert.Equal(256 * 1024, committedDuringRequest);
        Assert.Equal(0, app.Chunks.ChunkCount);              // no pool chunk was needed
    }

    [Fact]
    public async Task Under_the_Fail_overflow_policy_a_rent_beyond_the_maximum_throws_InsufficientMemoryException()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (IRequestBuffers buffers) =>
            {
                buffers.Rent(60 * 1024);
                var error = Assert.Throws<InsufficientMemoryException>(() => buffers.Rent(60 * 1024));
                Assert.Contains("MaxArenaSizePerRequest", error.Message, StringComparison.Ordinal);
                return "refused";
            }),
            options =>
            {
                options.MaxArenaSizePerRequest = 64 * 1024;
                options.OverflowPolicy = ArenaOverflowPolicy.Fail;
            });

        Assert.Equal("refused", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Bit_set_arenas_serve_concurrent_rents_without_overlap()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", async (IRequestBuffers buffers) =>
            {
                // Every task rents and writes; only once all have written is any block checked, so
                // a block that overlaps another task's shows that task's byte.
                var rented = await Task.WhenAll(Enumerable.Range(0, 4).Select(t => Task.Run(() =>
                {
                    var mine = new List<Memory<byte>>();
                    for (int i = 0; i < 50; i++)
                    {
                        Memory<byte> m = buffers.Rent(100);
                        m.Span.Fill((byte)(t + 1));
                        mine.Add(m);
                    }

                    return mine;
                })));
                bool disjoint = rented.Select((mine, t) => mine.All(m => !m.Span.ContainsAnyExcept((byte)(t + 1)))).All(ok => ok);
                return disjoint ? "disjoint" : "overlap";
            }),
            options => options.ArenaKind = RequestArenaKind.BitSet);

        Assert.Equal("disjoint", await app.Client.GetStringAsync("/"));
    }

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Vector3Like(float X, float Y, float Z);
}
