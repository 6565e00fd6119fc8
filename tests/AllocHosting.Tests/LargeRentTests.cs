using System.Globalization;
using System.Net;
using Microsoft.AspNetCore.Builder;

namespace AllocHosting.Tests;

/// <summary>Rents bigger than a pool chunk, and memory beyond the per-request maximum: large chunks of the pool, inside the budget.</summary>
public sealed class LargeRentTests
{
    private const int K = 1024;

    [Fact]
    public async Task Memory_beyond_the_per_request_maximum_comes_from_the_pool_inside_the_budget_and_an_oversize_chunk_is_unmapped_after()
    {
        long committedDuringRequest = 0;
        RequestArenaPool? pool = null;
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (IRequestBuffers buffers) =>
            {
                Memory<byte> big = buffers.Rent(300_000);   // beyond the 128 KiB maximum and the largest class
                big.Span.Fill(1);
                committedDuringRequest = pool!.CommittedBytes;
                return big.Length;
            }),
            options => options.MaxArenaSizePerRequest = 128 * K);
        pool = app.Pool;

        Assert.Equal("300000", await app.Client.GetStringAsync("/"));
        Assert.Equal([128L * K], app.Pool.LargeClassSizes);
        Assert.Equal(303_104, committedDuringRequest);   // 74 whole pages, counted against the budget
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.CommittedBytes == 0, "the oversize chunk is unmapped");
        Assert.Equal(0, app.Pool.LiveBytes);
    }

    [Fact]
    public async Task A_rent_larger_than_the_whole_budget_is_refused_with_a_clear_error_and_nothing_is_held()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            try
            {
                buffers.Rent(5 * K * K);   // the test app's budget is 4 MiB
                return "rented";
            }
            catch (InsufficientMemoryException e)
            {
                return e.Message;
            }
        }));

        string message = await app.Client.GetStringAsync("/");
        Assert.Contains("more than the whole request arena budget", message, StringComparison.Ordinal);
        Assert.Contains("MemoryBudget", message, StringComparison.Ordinal);
        Assert.Equal(0, app.Pool.CommittedBytes);
    }

    [Fact]
    public async Task Large_chunks_that_hold_the_budget_get_later_requests_a_503_with_Retry_After_until_they_come_back()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    buffers.Rent(3 * K * K);   // the 4 MiB class: the whole budget
                    holding.SetResult();
                    await release.Task;
                    return "held";
                });
                a.MapGet("/rent", (IRequestBuffers buffers) => buffers.Rent(100).Length.ToString(CultureInfo.InvariantCulture));
            },
            options =>
            {
                options.MaxArenaSizePerRequest = 4 * K * K;
                options.BudgetPolicy = ArenaBudgetPolicy.Reject;
                options.RetryAfter = TimeSpan.FromSeconds(3);
            });

        Task<string> holder = app.Client.GetStringAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        HttpResponseMessage rejected = await app.Client.GetAsync("/rent");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, rejected.StatusCode);
        Assert.Equal(TimeSpan.FromSeconds(3), rejected.Headers.RetryAfter?.Delta);

        release.SetResult();
        Assert.Equal("held", await holder);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the large chunk is back");

        // The idle 4 MiB chunk gives way to the pool chunk the next request needs.
        Assert.Equal("100", await app.Client.GetStringAsync("/rent"));
        Assert.Equal(64 * K, app.Pool.CommittedBytes);
    }

    [Fact]
    public async Task A_stale_Memory_of_a_large_chunk_throws_after_its_request_and_never_shows_the_next_requests_bytes()
    {
        Memory<byte> stale = default;
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapGet("/first", (IRequestBuffers buffers) =>
            {
                stale = buffers.Rent(200_000);
                stale.Span.Fill(1);
                return "ok";
            });
            a.MapGet("/second", (IRequestBuffers buffers) =>
            {
                Memory<byte> fresh = buffers.Rent(200_000);   // the same large chunk, reused
                bool zero = !fresh.Span.ContainsAnyExcept((byte)0);
                fresh.Span.Fill(2);
                bool staleThrows = Throws(() => stale.Span[0] = 3);
                return $"{zero} {staleThrows} {!fresh.Span.ContainsAnyExcept((byte)2)}";
            });
        });

        Assert.Equal("ok", await app.Client.GetStringAsync("/first"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the large chunk is back");
        Assert.Equal("True True True", await app.Client.GetStringAsync("/second"));
    }

    [Fact]
    public async Task A_body_beyond_the_per_request_maximum_is_read_whole_within_the_budget_and_everything_comes_back()
    {
        byte[] body = TestBytes.Pattern((2 * K * K) + 17, seed: 5);
        await using var app = await TestApp.StartAsync(
            a => a.MapPost("/", async (IRequestBuffers buffers) =>
            {
                ReadOnlyMemory<byte> read = await buffers.ReadBodyAsync();
                return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(read.Span));
            }),
            options => options.MemoryBudget = 16 * K * K);

        using var content = new ByteArrayContent(body);
        HttpResponseMessage response = await app.Client.PostAsync("/", content);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(body)), await response.Content.ReadAsStringAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "every chunk is back");
        Assert.True(app.Pool.CommittedBytes <= 16 * K * K);
    }

    [Fact]
    public async Task Concurrent_requests_of_mixed_large_rents_stay_within_the_budget_and_every_fresh_rent_is_zero()
    {
        long budget = 8L * K * K;
        long maxCommitted = 0;
        int dirty = 0;
        RequestArenaPool? pool = null;
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (IRequestBuffers buffers, int size, int seed) =>
            {
                Memory<byte> memory = buffers.Rent(size);
                if (memory.Span.ContainsAnyExcept((byte)0))
                {
                    Interlocked.Increment(ref dirty);
                }

                memory.Span.Fill((byte)seed);
                long committed = pool!.CommittedBytes;
                long seen;
                while ((seen = Interlocked.Read(ref maxCommitted)) < committed && Interlocked.CompareExchange(ref maxCommitted, committed, seen) != seen)
                {
                }

                return memory.Span.ContainsAnyExcept((byte)seed) ? "torn" : "ok";
            }),
            options =>
            {
                options.MemoryBudget = budget;
                options.BudgetPolicy = ArenaBudgetPolicy.Wait;
                options.BudgetWaitTimeout = TimeSpan.FromSeconds(5);
            });
        pool = app.Pool;

        int[] sizes = [100, 70 * K, 200_000, 600 * K, 1024 * K, (1024 * K) + 1, 3 * K * K];
        var random = new Random(42);
        var requests = Enumerable.Range(0, 160).Select(i => (Size: sizes[random.Next(sizes.Length)], Seed: 1 + (i % 250))).ToList();
        await Parallel.ForEachAsync(requests, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (request, cancellationToken) =>
        {
            HttpResponseMessage response = await app.Client.GetAsync($"/?size={request.Size}&seed={request.Seed}", cancellationToken);
            string text = await response.Content.ReadAsStringAsync(cancellationToken);
            Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.ServiceUnavailable, $"{response.StatusCode}: {text}");
            if (response.StatusCode == HttpStatusCode.OK)
            {
                Assert.Equal("ok", text);
            }
        });

        Assert.Equal(0, dirty);
        Assert.True(maxCommitted <= budget, $"{maxCommitted} bytes committed with a budget of {budget}");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "every chunk is back");
    }

    private static bool Throws(Action action)
    {
        try
        {
            action();
            return false;
        }
        catch (ObjectDisposedException)
        {
            return true;
        }
    }
}
