using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace AllocHosting.Tests;

public class RequestArenaMiddlewareTests
{
    [Fact]
    public async Task Buffers_are_released_at_request_end_and_the_chunk_goes_back_to_the_pool()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/rent", (IRequestBuffers buffers) =>
        {
            buffers.Rent(1000).Span.Fill(1);
            return buffers.Used.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }));

        string used = await app.Client.GetStringAsync("/rent");

        Assert.True(long.Parse(used, System.Globalization.CultureInfo.InvariantCulture) >= 1000);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the chunk is back");
        Assert.Equal(1, app.IdleChunkCount);
        Assert.Equal(0, app.Pool.LiveBytes);
    }

    [Fact]
    public async Task Buffers_are_released_when_the_handler_throws()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/throw", (IRequestBuffers buffers) =>
        {
            buffers.Rent(5000);
            throw new InvalidOperationException("handler failed");
        }));

        // The test server hands the handler's exception to the client.
        await Assert.ThrowsAsync<InvalidOperationException>(() => app.Client.GetAsync("/throw"));

        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the chunk is back after the exception");
    }

    [Fact]
    public async Task Buffers_are_released_when_the_client_aborts()
    {
        var rented = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/slow", async (IRequestBuffers buffers, CancellationToken aborted) =>
        {
            buffers.Rent(3000);
            rented.SetResult();
            await Task.Delay(Timeout.Infinite, aborted);
        }));
        using var cancel = new CancellationTokenSource();

        Task<HttpResponseMessage> request = app.Client.GetAsync("/slow", cancel.Token);
        await rented.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, app.Pool.ChunksInUse);
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => request);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the chunk is back after the abort");
    }

    [Fact]
    public async Task Requests_that_never_rent_take_no_chunk()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/noop", () => "ok"));

        for (int i = 0; i < 20; i++)
        {
            Assert.Equal("ok", await app.Client.GetStringAsync("/noop"));
        }

        Assert.Equal(0, app.Chunks.ChunkCount);
    }

    [Fact]
    public async Task The_feature_is_the_request_arena_and_is_removed_after_the_request()
    {
        IRequestArenaFeature? seen = null;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/feature", (HttpContext context) =>
        {
            seen = context.Features.Get<IRequestArenaFeature>();
            Assert.NotNull(seen);
            Assert.True(seen.IsActive);
            seen.Rent(100).Span.Fill(3);
            return seen.Kind.ToString();
        }));

        Assert.Equal("Bump", await app.Client.GetStringAsync("/feature"));
        await TestApp.EventuallyAsync(() => !seen!.IsActive, "the arena is released");
        Assert.Throws<InvalidOperationException>(() => seen!.Rent(10));
    }

    [Fact]
    public async Task Two_sequential_requests_never_see_each_others_bytes()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/write-then-check", (IRequestBuffers buffers) =>
        {
            Span<byte> span = buffers.Rent(8192).Span;
            bool clean = !span.ContainsAnyExcept((byte)0);
            span.Fill(0xAB);
            return clean ? "clean" : "dirty";
        }),
        options => options.ReuseDelay = TimeSpan.Zero);   // no quarantine: the next request gets the same chunk at once

        Assert.Equal("clean", await app.Client.GetStringAsync("/write-then-check"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the first request released");
        Assert.Equal("clean", await app.Client.GetStringAsync("/write-then-check"));
        Assert.Equal(1, app.Chunks.ChunkCount); // the same (warm) chunk served both
    }

    [Fact]
    public async Task With_clearing_off_the_next_request_sees_the_bytes_so_clearing_is_what_isolates()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/write-then-check", (IRequestBuffers buffers) =>
            {
                Span<byte> span = buffers.Rent(8192).Span;
                bool clean = !span.ContainsAnyExcept((byte)0);
                span.Fill(0xAB);
                return clean ? "clean" : "dirty";
            }),
            options =>
            {
                options.ClearPolicy = ArenaClearPolicy.None;
                options.ReuseDelay = TimeSpan.Zero;   // so that the next request gets the same chunk, uncleared
            });

        Assert.Equal("clean", await app.Client.GetStringAsync("/write-then-check"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the first request released");
        Assert.Equal("dirty", await app.Client.GetStringAsync("/write-then-check"));
    }

    [Fact]
    public async Task An_escaped_memory_throws_ObjectDisposedException_after_the_request()
    {
        Memory<byte> escaped = default;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/escape", (IRequestBuffers buffers) =>
        {
            escaped = buffers.Rent(256);
            escaped.Span.Fill(7);
            return "ok";
        }));

        await app.Client.GetStringAsync("/escape");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");

        Assert.Throws<ObjectDisposedException>(() => escaped.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => escaped.Pin());
    }

    [Fact]
    public async Task Concurrent_renting_inside_one_request_hands_out_disjoint_memory()
    {
        const int Tasks = 8;
        const int RentsPerTask = 100;
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/fan-out", async (IRequestBuffers buffers) =>
            {
                var results = await Task.WhenAll(Enumerable.Range(0, Tasks).Select(task => Task.Run(() =>
                {
                    var mine = new List<Memory<byte>>();
                    for (int i = 0; i < RentsPerTask; i++)
                    {
                        Memory<byte> memory = buffers.Rent(48 + (i % 5 * 16));
                        memory.Span.Fill((byte)(task + 1));
                        mine.Add(memory);
                    }

                    return (task, mine);
                })));

                // Every byte still holds its renter's mark: no two rents overlapped.
                foreach (var (task, mine) in results)
                {
                    foreach (Memory<byte> memory in mine)
                    {
                        if (memory.Span.ContainsAnyExcept((byte)(task + 1)))
                        {
                            return "overlap";
                        }
                    }
                }

                return "disjoint";
            }),
            options => options.InitialArenaSize = 16 * 1024); // small chunks: the fan-out also chains concurrently

        Assert.Equal("disjoint", await app.Client.GetStringAsync("/fan-out"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every chunk is back");
    }

    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public async Task Parallel_requests_under_a_bounded_load_all_get_their_own_bytes(RequestArenaKind kind)
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapPost("/echo-sum", async (HttpRequest request, IRequestBuffers buffers) =>
            {
                Memory<byte> buffer = buffers.Rent(4096);
                int read = await request.Body.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false);
                await Task.Yield();
                long sum = 0;
                foreach (byte b in buffer.Span[..read])
                {
                    sum += b;
                }

                return sum.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }),
            options =>
            {
                options.ArenaKind = kind;
                // The chunk bound below is the LIFO pool's; a quarantine adds about rate × delay chunks.
                options.ReuseDelay = TimeSpan.Zero;
            });

        await Parallel.ForEachAsync(Enumerable.Range(0, 200), new ParallelOptions { MaxDegreeOfParallelism = 16 }, async (i, token) =>
        {
            byte value = (byte)(i % 251);
            byte[] body = Enumerable.Repeat(value, 1000 + i).ToArray();
            using var response = await app.Client.PostAsync("/echo-sum", new ByteArrayContent(body), token);
            Assert.Equal(((long)value * body.Length).ToString(System.Globalization.CultureInfo.InvariantCulture), await response.Content.ReadAsStringAsync(token));
        });

        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "every chunk is back");
        Assert.True(app.Chunks.ChunkCount <= 16, $"{app.Chunks.ChunkCount} chunks for at most 16 requests at once");
    }

    [Fact]
    public async Task A_spent_budget_rejects_with_503_and_Retry_After_under_the_Reject_policy()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    buffers.Rent(100);
                    holding.SetResult();
                    await release.Task;
                    return "held";
                });
                a.MapGet("/rent", (IRequestBuffers buffers) => buffers.Rent(100).Length.ToString(System.Globalization.CultureInfo.InvariantCulture));
            },
            options =>
            {
                options.MemoryBudget = 64 * 1024;
                options.MaxArenaSizePerRequest = 64 * 1024;
                options.BudgetPolicy = ArenaBudgetPolicy.Reject;
                options.RetryAfter = TimeSpan.FromSeconds(7);
            });

        Task<string> holder = app.Client.GetStringAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        HttpResponseMessage rejected = await app.Client.GetAsync("/rent");
        release.SetResult();

        Assert.Equal(HttpStatusCode.ServiceUnavailable, rejected.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(7), rejected.Headers.RetryAfter?.Delta);
        Assert.Equal("held", await holder);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the held chunk is back");
        Assert.Equal("100", await app.Client.GetStringAsync("/rent"));
    }

    [Fact]
    public async Task A_spent_budget_still_gives_503_and_Retry_After_behind_the_developer_exception_page()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    buffers.Rent(100);
                    holding.SetResult();
                    await release.Task;
                });
                a.MapGet("/rent", (IRequestBuffers buffers) => buffers.Rent(100).Length);
            },
            options =>
            {
                options.MemoryBudget = 64 * 1024;
                options.MaxArenaSizePerRequest = 64 * 1024;
                options.BudgetPolicy = ArenaBudgetPolicy.Reject;
            },
            environment: "Development");

        Task holder = app.Client.GetAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        HttpResponseMessage rejected = await app.Client.GetAsync("/rent");
        release.SetResult();
        await holder;

        Assert.Equal(HttpStatusCode.ServiceUnavailable, rejected.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(1), rejected.Headers.RetryAfter?.Delta);
    }

    [Fact]
    public async Task Under_the_Wait_policy_a_rent_gets_the_chunk_another_request_gives_back()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    buffers.Rent(100);
                    holding.SetResult();
                    await release.Task;
                    return "held";
                });
                a.MapGet("/rent", async (IRequestBuffers buffers) => (await buffers.RentAsync(100)).Length);
            },
            options =>
            {
                options.MemoryBudget = 64 * 1024;
                options.MaxArenaSizePerRequest = 64 * 1024;
                options.BudgetPolicy = ArenaBudgetPolicy.Wait;

                // Far beyond the time the holder is held, so the waiting rent cannot time out into a 503.
                options.BudgetWaitTimeout = TimeSpan.FromSeconds(10);
            });
        Assert.Equal(1, app.Pool.MaxChunks);

        Task<string> holder = app.Client.GetStringAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // RentAsync waits without blocking a thread.
        Task<HttpResponseMessage> waiting = app.Client.GetAsync("/rent");
        await Task.WhenAny(waiting, Task.Delay(TimeSpan.FromMilliseconds(200)));
        Assert.False(waiting.IsCompleted, "the second request waits while the budget's only chunk is held");
        Assert.Equal(1, app.Chunks.ChunkCount);

        release.SetResult();
        Assert.Equal("held", await holder.WaitAsync(TimeSpan.FromSeconds(10)));
        HttpResponseMessage waited = await waiting.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(HttpStatusCode.OK, waited.StatusCode);
        Assert.Equal("100", await waited.Content.ReadAsStringAsync());

        // Trimming is off in TestApp, so a chunk made beyond the budget would still be counted.
        Assert.Equal(app.Pool.MaxChunks, app.Chunks.ChunkCount);
    }

    [Fact]
    public async Task Under_the_Wait_policy_a_rent_is_rejected_when_no_chunk_comes_back_in_time()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    buffers.Rent(100);
                    holding.SetResult();
                    await release.Task;
                });
                a.MapGet("/rent", async (IRequestBuffers buffers) => (await buffers.RentAsync(100)).Length);
            },
            options =>
            {
                options.MemoryBudget = 64 * 1024;
                options.MaxArenaSizePerRequest = 64 * 1024;
                options.BudgetPolicy = ArenaBudgetPolicy.Wait;
                options.BudgetWaitTimeout = TimeSpan.FromMilliseconds(50);
            });

        Task holder = app.Client.GetAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var started = DateTime.UtcNow;
        HttpResponseMessage rejected = await app.Client.GetAsync("/rent");
        var waited = DateTime.UtcNow - started;
        release.SetResult();
        await holder;

        Assert.Equal(HttpStatusCode.ServiceUnavailable, rejected.StatusCode);
        Assert.True(waited >= TimeSpan.FromMilliseconds(40), $"waited only {waited}");
    }
}
