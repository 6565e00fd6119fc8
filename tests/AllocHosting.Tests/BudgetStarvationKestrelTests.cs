using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>
/// The budget held by 200 concurrent requests on a real Kestrel (127.0.0.1) starves nothing: the rents
/// that wait hold no thread, so endpoints that never rent and the health check keep answering. With the
/// blocking wait this replaced, a probe took over a minute. In a collection of its own, run alone, so
/// that other tests' load does not blur the timing bound.
/// </summary>
[Collection(Name)]
public sealed class BudgetStarvationKestrelTests
{
    public const string Name = "Budget starvation (timed, run alone)";

    private const int Chunk = 64 * 1024;

    // A probe of an endpoint that never rents must answer within this while the budget's waiters queue.
    private static readonly TimeSpan ProbeBound = TimeSpan.FromMilliseconds(100);

    [Fact]
    public async Task Two_hundred_requests_holding_and_waiting_for_the_budget_leave_health_and_non_renting_endpoints_responsive()
    {
        const int Chunks = 16, Requests = 200;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int holding = 0;
        await using var app = await KestrelTestApp.StartAsync(
            a =>
            {
                // Each request rents (its body, read into request memory) and then holds it until released.
                a.MapPost("/hold", async (IRequestBuffers buffers) =>
                {
                    ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();
                    Interlocked.Increment(ref holding);
                    await release.Task;
                    return body.Length.ToString(System.Globalization.CultureInfo.InvariantCulture);
                });
                a.MapGet("/never", () => "ok");
                a.MapHealthChecks("/health");
            },
            options =>
            {
                options.MemoryBudget = Chunks * Chunk;
                options.MaxArenaSizePerRequest = Chunk;
                options.BudgetWaitTimeout = SwitchableAllocatorOptions.MaxBudgetWaitTimeout;
            });
        // Bounded: on a starved thread pool (the blocking wait this replaced) a probe took over a minute.
        using var probe = new HttpClient { BaseAddress = app.Http1, Timeout = TimeSpan.FromSeconds(5) };
        foreach (string path in new[] { "/health", "/never" })
        {
            // The connection and both endpoints warm (compiled) before the load.
            Assert.Equal(HttpStatusCode.OK, (await probe.GetAsync(path)).StatusCode);
        }

        using var load = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = Requests }) { BaseAddress = app.Http1 };

        Task<HttpResponseMessage>[] requests = Enumerable.Range(0, Requests)
            .Select(_ => load.PostAsync("/hold", new ByteArrayContent(new byte[100])))
            .ToArray();
        await TestApp.EventuallyAsync(() => Volatile.Read(ref holding) == Chunks && app.Pool.WaitingRents == Requests - Chunks, "the budget is held and the rest wait");
        await Task.Delay(100);   // the 200 connections' own work settles; the waiters keep waiting (10 s timeout)

        var timings = new List<TimeSpan>();
        for (int i = 0; i < 5; i++)
        {
            foreach (string path in new[] { "/health", "/never" })
            {
                var watch = Stopwatch.StartNew();
                using HttpResponseMessage answer = await probe.GetAsync(path);
                timings.Add(watch.Elapsed);
                Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            }
        }

        Assert.True(timings.TrueForAll(t => t < ProbeBound), $"probes took {string.Join(", ", timings.Select(t => $"{t.TotalMilliseconds:F1} ms"))}");

        release.SetResult();
        HttpResponseMessage[] responses = await Task.WhenAll(requests).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        await TestApp.EventuallyAsync(
            () => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0 && app.Pool.ActiveArenas == 0 && app.Pool.WaitingRents == 0,
            "every request gave its memory back");
    }
}
