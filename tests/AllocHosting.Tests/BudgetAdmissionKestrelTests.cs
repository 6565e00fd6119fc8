using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace AllocHosting.Tests;

/// <summary>
/// Admission to a spent budget on a real Kestrel (127.0.0.1): no thread blocks waiting for memory, async
/// rents wait in a FIFO queue bounded in length and time, cancellation leaves nothing behind, and every
/// refusal is a 503 with Retry-After (problem details when the app has them) or, after the response
/// started, an abort that is counted.
/// </summary>
public sealed class BudgetAdmissionKestrelTests
{
    private const int Chunk = 64 * 1024;

    [Fact]
    public async Task The_README_example_of_RentAsync_answers_the_body_s_digest()
    {
        await using var app = await KestrelTestApp.StartAsync(a =>
            // As in README.md, "When the budget is spent".
            a.MapPost("/digest", async (IRequestBuffers buffers, CancellationToken aborted) =>
            {
                ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync(aborted);              // grows, waiting for memory if need be
                Memory<byte> hash = await buffers.RentAsync(SHA256.HashSizeInBytes, aborted);  // waits the same way, never blocks
                SHA256.HashData(body.Span, hash.Span);
                return Convert.ToHexString(hash.Span);
            }));
        using var client = new HttpClient { BaseAddress = app.Http1 };

        using HttpResponseMessage response = await client.PostAsync("/digest", new ByteArrayContent("abc"u8.ToArray()));

        Assert.Equal(Convert.ToHexString(SHA256.HashData("abc"u8)), await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Waiters_are_served_in_the_order_they_began_to_wait()
    {
        const int Waiters = 8;
        var gate = new Gate();
        await using var app = await StartAsync(gate);
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Task<HttpResponseMessage> holder = await gate.HoldAsync(client);

        var waiting = new List<Task<HttpResponseMessage>>();
        for (int i = 0; i < Waiters; i++)
        {
            waiting.Add(client.GetAsync($"/wait?id={i}"));
            int queued = i + 1;
            await TestApp.EventuallyAsync(() => app.Pool.WaitingRents == queued, $"{queued} rents wait");
        }

        gate.Release.SetResult();
        Assert.Equal(HttpStatusCode.OK, (await holder.WaitAsync(TimeSpan.FromSeconds(10))).StatusCode);
        await Task.WhenAll(waiting).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(Enumerable.Range(0, Waiters), gate.Served);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.WaitingRents == 0, "everything is back");
    }

    [Fact]
    public async Task The_stream_s_async_write_waits_for_memory_where_its_synchronous_write_is_refused()
    {
        var gate = new Gate();
        await using var app = await StartAsync(gate);
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Task<HttpResponseMessage> holder = await gate.HoldAsync(client);

        using HttpResponseMessage refused = await client.GetAsync("/stream?sync=true");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);

        Task<HttpResponseMessage> waiting = client.GetAsync("/stream?sync=false");
        await TestApp.EventuallyAsync(() => app.Pool.WaitingRents == 1, "the async write waits");
        gate.Release.SetResult();
        await holder.WaitAsync(TimeSpan.FromSeconds(10));
        using HttpResponseMessage written = await waiting.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(HttpStatusCode.OK, written.StatusCode);
        Assert.Equal("100", await written.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Beyond_the_queue_limit_a_rent_is_refused_at_once_with_503()
    {
        var gate = new Gate();
        await using var app = await StartAsync(gate, options => options.BudgetQueueLimit = 2);
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Task<HttpResponseMessage> holder = await gate.HoldAsync(client);
        Task<HttpResponseMessage> firstQueued = client.GetAsync("/wait?id=0");
        await TestApp.EventuallyAsync(() => app.Pool.WaitingRents == 1, "one rent waits");
        Task<HttpResponseMessage>[] queued = [firstQueued, client.GetAsync("/wait?id=1")];
        await TestApp.EventuallyAsync(() => app.Pool.WaitingRents == 2, "the queue is full");

        var watch = Stopwatch.StartNew();
        using HttpResponseMessage refused = await client.GetAsync("/wait?id=2");
        TimeSpan took = watch.Elapsed;

        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("1", refused.Headers.GetValues("Retry-After").Single());
        Assert.True(took < TimeSpan.FromSeconds(2), $"the refusal took {took} (the wait timeout is 10 s)");
        gate.Release.SetResult();
        await holder.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.All(await Task.WhenAll(queued).WaitAsync(TimeSpan.FromSeconds(10)), r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal([0, 1], gate.Served);
    }

    [Fact]
    public async Task A_waiter_not_served_within_the_wait_timeout_gets_503_with_Retry_After()
    {
        var gate = new Gate();
        await using var app = await StartAsync(gate, options => options.BudgetWaitTimeout = TimeSpan.FromMilliseconds(300));
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Task<HttpResponseMessage> holder = await gate.HoldAsync(client);

        var watch = Stopwatch.StartNew();
        using HttpResponseMessage refused = await client.GetAsync("/wait?id=0");
        TimeSpan took = watch.Elapsed;

        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("1", refused.Headers.GetValues("Retry-After").Single());
        Assert.True(took >= TimeSpan.FromMilliseconds(250) && took < TimeSpan.FromSeconds(5), $"the refusal came after {took}");
        Assert.Equal(0, app.Pool.WaitingRents);
        Assert.Empty(gate.Served);
        gate.Release.SetResult();
        await holder.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, app.Pool.RejectedCount);
    }

    [Fact]
    public async Task A_client_that_aborts_while_its_rent_waits_leaves_the_queue_and_nothing_leaks()
    {
        var gate = new Gate();
        await using var app = await StartAsync(gate);
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Task<HttpResponseMessage> holder = await gate.HoldAsync(client);

        using (RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port))
        {
            await connection.SendAsync(RawHttp1Connection.GetHead("/wait?id=0"));
            await TestApp.EventuallyAsync(() => app.Pool.WaitingRents == 1, "the rent waits");
            connection.Reset();
        }

        Assert.Equal(nameof(OperationCanceledException), await gate.Outcome.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        await TestApp.EventuallyAsync(() => app.Pool.WaitingRents == 0, "the aborted rent left the queue");
        gate.Release.SetResult();
        await holder.WaitAsync(TimeSpan.FromSeconds(10));

        await TestApp.EventuallyAsync(
            () => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0 && app.Pool.ActiveArenas == 0,
            "every chunk is back");
        Assert.Empty(gate.Served);
        Assert.Equal(0, app.Pool.RejectedCount);   // a canceled wait is not a refusal

        // The chunk the aborted rent did not get serves the next request at once.
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/wait?id=1")).StatusCode);
    }

    [Fact]
    public async Task A_synchronous_rent_on_a_spent_budget_is_refused_without_waiting_even_under_the_Wait_policy()
    {
        var gate = new Gate();
        await using var app = await StartAsync(gate, options => options.BudgetWaitTimeout = TimeSpan.FromSeconds(5));
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Task<HttpResponseMessage> holder = await gate.HoldAsync(client);

        var watch = Stopwatch.StartNew();
        using HttpResponseMessage refused = await client.GetAsync("/rent");
        TimeSpan took = watch.Elapsed;

        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("1", refused.Headers.GetValues("Retry-After").Single());
        Assert.Equal("text/plain", refused.Content.Headers.ContentType?.MediaType);
        Assert.True(took < TimeSpan.FromSeconds(1), $"the refusal took {took} (the wait timeout is 5 s)");
        gate.Release.SetResult();
        await holder.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task With_AddProblemDetails_a_refusal_answers_problem_details_with_Retry_After()
    {
        var gate = new Gate();
        await using var app = await StartAsync(
            gate,
            options => options.BudgetPolicy = ArenaBudgetPolicy.Reject,
            builder => builder.Services.AddProblemDetails());
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Task<HttpResponseMessage> holder = await gate.HoldAsync(client);

        using var request = new HttpRequestMessage(HttpMethod.Get, "/wait?id=0");
        request.Headers.Accept.ParseAdd("application/json");
        using HttpResponseMessage refused = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        Assert.Equal("1", refused.Headers.GetValues("Retry-After").Single());
        using JsonDocument problem = JsonDocument.Parse(await refused.Content.ReadAsStringAsync());
        Assert.Equal(503, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Contains("budget", problem.RootElement.GetProperty("title").GetString(), StringComparison.Ordinal);
        gate.Release.SetResult();
        await holder.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_refusal_after_the_response_started_aborts_the_request_and_is_counted_and_logged_once()
    {
        var gate = new Gate();
        var logs = new FakeLogCollector();
        await using var app = await StartAsync(
            gate,
            options => options.BudgetPolicy = ArenaBudgetPolicy.Reject,
            builder =>
            {
                builder.Logging.AddFilter("AllocHosting", LogLevel.Debug);
                builder.Services.AddSingleton<ILoggerProvider>(new FakeLoggerProvider(logs));
            });
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Task<HttpResponseMessage> holder = await gate.HoldAsync(client);

        using HttpResponseMessage started = await client.GetAsync("/late", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, started.StatusCode);
        await Assert.ThrowsAnyAsync<Exception>(() => started.Content.ReadAsStringAsync());

        await TestApp.EventuallyAsync(() => app.Pool.RejectedCount == 1, "the aborted request is counted");
        HealthReport health = await app.App.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        Assert.Equal(1L, health.Entries[RequestArenaHealthCheck.Name].Data["rejectedTotal"]);
        Assert.Equal(HealthStatus.Degraded, health.Entries[RequestArenaHealthCheck.Name].Status);

        // The release counts the refusal, then logs it: the count can be seen before the log is written.
        await TestApp.EventuallyAsync(() => logs.GetSnapshot().Any(r => r.Id.Name == "RequestRejected"), "the refusal is logged");
        Assert.Single(logs.GetSnapshot(), r => r.Id.Name == "RequestRejected");
        Assert.DoesNotContain(logs.GetSnapshot(), r => r.Exception is RequestArenaBudgetExceededException);
        gate.Release.SetResult();
        await holder.WaitAsync(TimeSpan.FromSeconds(10));
    }

    // A budget of one chunk held by /hold until Release; /wait?id= rents asynchronously and records the
    // order in which the waits were served; /rent rents synchronously; /late rents after starting the response.
    private static Task<KestrelTestApp> StartAsync(Gate gate, Action<SwitchableAllocatorOptions>? configure = null, Action<WebApplicationBuilder>? build = null) =>
        KestrelTestApp.StartAsync(
            a =>
            {
                // A failed test must not leave the holder running: shutdown would wait for it.
                a.Lifetime.ApplicationStopping.Register(() => gate.Release.TrySetResult());
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    buffers.Rent(100);
                    gate.Holding.TrySetResult();
                    await gate.Release.Task;
                    return "held";
                });
                a.MapGet("/wait", async (IRequestBuffers buffers, int id) =>
                {
                    try
                    {
                        Memory<byte> memory = await buffers.RentAsync(100);
                        gate.Served.Enqueue(id);
                        return memory.Length;
                    }
                    catch (Exception error)
                    {
                        gate.Outcome.TrySetResult(error is OperationCanceledException ? nameof(OperationCanceledException) : error.GetType().Name);
                        throw;
                    }
                });
                a.MapGet("/rent", (IRequestBuffers buffers) => buffers.Rent(100).Length);
                a.MapGet("/stream", async (IRequestBuffers buffers, bool sync) =>
                {
                    using RequestBufferStream stream = buffers.CreateStream();
                    if (sync)
                    {
                        stream.Write(new byte[100]);
                    }
                    else
                    {
                        await stream.WriteAsync(new byte[100]);
                    }

                    return stream.Length;
                });
                a.MapGet("/late", async (HttpContext context, IRequestBuffers buffers) =>
                {
                    await context.Response.WriteAsync("partial");
                    await context.Response.Body.FlushAsync();
                    await Task.Delay(200);   // the client has the head before the abort resets the connection
                    buffers.Rent(100);
                });
            },
            options =>
            {
                options.MemoryBudget = Chunk;
                options.MaxArenaSizePerRequest = Chunk;
                options.BudgetWaitTimeout = SwitchableAllocatorOptions.MaxBudgetWaitTimeout;
                configure?.Invoke(options);
            },
            build);

    private sealed class Gate
    {
        public TaskCompletionSource Holding { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource<string> Outcome { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ConcurrentQueue<int> Served { get; } = new();

        // Starts the request that holds the budget's only chunk, once it holds it.
        public async Task<Task<HttpResponseMessage>> HoldAsync(HttpClient client)
        {
            Task<HttpResponseMessage> holder = client.GetAsync("/hold");
            await Holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
            return holder;
        }
    }
}
