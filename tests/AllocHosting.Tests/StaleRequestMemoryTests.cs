using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace AllocHosting.Tests;

/// <summary>
/// Request memory kept past its request, on a real Kestrel under concurrency: every kept Memory, stream, writer,
/// pool owner, body and IRequestBuffers refuses use (ObjectDisposedException or InvalidOperationException), and
/// no request ever sees another's bytes: each fresh rent is zero and each request's own patterns stay intact
/// while other requests attack the memory of ended ones.
/// </summary>
public class StaleRequestMemoryTests
{
    private const int Clients = 8;
    private const int RequestsPerClient = 25;
    private const int BodyLength = 3_000;

    [Fact]
    public async Task Memory_kept_past_its_request_throws_on_use_and_never_touches_a_later_requests_bytes()
    {
        var ended = new ConcurrentQueue<Kept>();
        int attacks = 0;
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers, int id) =>
        {
            var failures = new List<string>();
            byte[] body = TestBytes.Pattern(BodyLength, id);
            ReadOnlyMemory<byte> read = await buffers.ReadBodyAsync();
            ReadOnlySequence<byte> readSequence = await buffers.ReadBodySequenceAsync();
            Check(read.Span.SequenceEqual(body), "the body read is the body sent", failures);

            // Fresh memory of every kind is zero (clearing is on by default), then takes this request's pattern.
            byte[] mine = TestBytes.Pattern(2_000, id + 1_000_000);
            Memory<byte> rented = buffers.Rent(mine.Length);
            Check(!rented.Span.ContainsAnyExcept((byte)0), "a fresh rent is zero", failures);
            mine.CopyTo(rented);

            RequestBufferWriter writer = buffers.CreateWriter();
            Span<byte> span = writer.GetSpan(mine.Length);
            Check(!span[..mine.Length].ContainsAnyExcept((byte)0), "a fresh writer segment is zero", failures);
            writer.Write(mine);

            MemoryPool<byte> pool = buffers.AsMemoryPool();
            IMemoryOwner<byte> owner = pool.Rent(mine.Length);
            Check(!owner.Memory.Span.ContainsAnyExcept((byte)0), "a fresh pool rent is zero", failures);
            mine.CopyTo(owner.Memory);

            RequestBufferStream stream = buffers.CreateStream();
            stream.Write(mine);

            var kept = new Kept(buffers, rented, writer, stream, pool, owner, owner.Memory, read, readSequence);
            context.Response.OnCompleted(() =>
            {
                // After the pipeline, the middleware included: the arena was released.
                ended.Enqueue(kept);
                return Task.CompletedTask;
            });

            // Attack the memory of up to four ended requests, yielding between them so requests interleave.
            foreach (Kept victim in ended.Reverse().Take(4).ToArray())
            {
                lock (victim)
                {
                    Attack(victim, failures);   // a kept writer or stream is still one-user-at-a-time
                }

                Interlocked.Increment(ref attacks);
                await Task.Yield();
            }

            Check(rented.Span.SequenceEqual(mine), "the rent keeps its pattern", failures);
            Check(writer.WrittenSequence.ToArray().AsSpan().SequenceEqual(mine), "the writer keeps its pattern", failures);
            Check(owner.Memory.Span.SequenceEqual(mine), "the pool rent keeps its pattern", failures);
            Check(stream.GetReadOnlySequence().ToArray().AsSpan().SequenceEqual(mine), "the stream keeps its pattern", failures);
            Check(read.Span.SequenceEqual(body) && readSequence.ToArray().AsSpan().SequenceEqual(body), "the body keeps its bytes", failures);
            return failures.Count == 0 ? "ok" : string.Join("; ", failures);
        }));

        using var client = new HttpClient { BaseAddress = app.Http1 };
        var deadline = DateTime.UtcNow.AddSeconds(20);
        await Task.WhenAll(Enumerable.Range(0, Clients).Select(async c =>
        {
            for (int r = 0; r < RequestsPerClient && DateTime.UtcNow < deadline; r++)
            {
                int id = (c * RequestsPerClient) + r;
                using HttpResponseMessage response = await client.PostAsync($"/?id={id}", new ByteArrayContent(TestBytes.Pattern(BodyLength, id)));
                Assert.Equal("ok", await response.Content.ReadAsStringAsync());
            }
        }));

        Assert.True(attacks >= Clients, $"{attacks} attacks on ended requests");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its arena");
        var afterwards = new List<string>();
        foreach (Kept victim in ended)
        {
            Attack(victim, afterwards);
        }

        Assert.Empty(afterwards);
    }

    [Fact]
    public async Task Work_that_outlives_its_request_cannot_start_reading_a_body_and_the_next_request_on_the_connection_reads_its_own()
    {
        var outcomes = new ConcurrentQueue<string>();
        var lateWork = new ConcurrentBag<Task>();
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers, bool late) =>
        {
            if (late)
            {
                // Fire and forget: the work reads after the request ended (it waits for the end, so it surely does).
                var end = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                context.Response.OnCompleted(() =>
                {
                    end.SetResult();
                    return Task.CompletedTask;
                });
                lateWork.Add(Task.Run(async () =>
                {
                    await end.Task;
                    outcomes.Enqueue(await TryAsync(() => buffers.ReadBodyAsync()));
                    outcomes.Enqueue(await TryAsync(() => buffers.ReadBodySequenceAsync()));
                }));
                return "left";
            }

            ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();
            return $"{body.Length} {body.Span[0]} {body.Span[^1]}";
        }));

        using RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);
        for (int i = 0; i < 5; i++)
        {
            // The late request's body is left unread; the next request on the same connection (the same pooled
            // HttpContext, body reader and maybe arena) must read exactly its own.
            byte[] next = TestBytes.Pattern(1_000 + i, i);
            await connection.SendAsync(RawHttp1Connection.PostHead("/?late=true", 500), TestBytes.Pattern(500, 100 + i));
            var left = await connection.ReadResponseAsync();
            Assert.Equal("left", System.Text.Encoding.UTF8.GetString(left!.Value.Body));
            await connection.SendAsync(RawHttp1Connection.PostHead("/?late=false", next.Length), next);
            var own = await connection.ReadResponseAsync();
            Assert.Equal($"{next.Length} {next[0]} {next[^1]}", System.Text.Encoding.UTF8.GetString(own!.Value.Body));
        }

        await Task.WhenAll(lateWork).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(10, outcomes.Count);
        Assert.All(outcomes, outcome => Assert.Equal(nameof(InvalidOperationException), outcome));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its arena");
    }

    [Fact]
    public async Task A_body_read_still_running_when_its_request_ends_fails_and_never_reads_a_later_requests_body()
    {
        var outcomes = new ConcurrentQueue<string>();
        var lateWork = new ConcurrentBag<Task>();
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers, bool late) =>
        {
            if (late)
            {
                // Fire and forget a read of a body that has not all arrived, and end the request.
                lateWork.Add(Task.Run(async () => outcomes.Enqueue(await TryAsync(() => buffers.ReadBodyAsync()))));
                await Task.Delay(50);
                return "left";
            }

            ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();
            return $"{body.Length} {body.Span[0]} {body.Span[^1]}";
        }));

        for (int i = 0; i < 3; i++)
        {
            using (RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port))
            {
                await connection.SendAsync(RawHttp1Connection.PostHead("/?late=true", 2_000), TestBytes.Pattern(500, i));
                var left = await connection.ReadResponseAsync();
                Assert.Equal("left", System.Text.Encoding.UTF8.GetString(left!.Value.Body));
                await connection.ServerClosedAsync();   // Kestrel does not reuse a connection whose body a stale read holds
            }

            byte[] next = TestBytes.Pattern(1_000 + i, 10 + i);
            using RawHttp1Connection fresh = await RawHttp1Connection.OpenAsync(app.Http1.Port);
            await fresh.SendAsync(RawHttp1Connection.PostHead("/?late=false", next.Length), next);
            var own = await fresh.ReadResponseAsync();
            Assert.Equal($"{next.Length} {next[0]} {next[^1]}", System.Text.Encoding.UTF8.GetString(own!.Value.Body));
        }

        await Task.WhenAll(lateWork).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(3, outcomes.Count);
        Assert.All(outcomes, outcome => Assert.Contains(outcome, new[] { nameof(InvalidOperationException), nameof(ObjectDisposedException), nameof(OperationCanceledException), nameof(TaskCanceledException) }));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its arena");
    }

    private static async Task<string> TryAsync<T>(Func<ValueTask<T>> read)
    {
        try
        {
            await read();
            return "read";
        }
        catch (Exception error)
        {
            return error.GetType().Name;
        }
    }

    private static void Check(bool condition, string what, List<string> failures)
    {
        if (!condition)
        {
            failures.Add($"not so: {what}");
        }
    }

    // Every use of what an ended request kept; writes go through (and would corrupt a live request) if they did not throw.
    private static void Attack(Kept kept, List<string> failures)
    {
        byte[] buffer = new byte[64];
        Refused(() => kept.Rented.Span.Fill(0xEE), "write to a kept Memory", failures);
        Refused(() => _ = kept.Rented.Span[0], "read from a kept Memory", failures);
        Refused(() => _ = kept.Body.Span[0], "read from a kept body", failures);
        Refused(() => _ = kept.BodySequence.ToArray(), "read from a kept body sequence", failures);
        Refused(() => kept.Writer.GetSpan(10).Fill(0xEE), "write through a kept writer", failures);
        Refused(() => kept.Writer.GetSpan(100_000).Fill(0xEE), "a kept writer growing", failures);
        Refused(() => _ = kept.Writer.WrittenSequence.ToArray(), "read through a kept writer", failures);
        Refused(() => kept.Stream.Write(buffer), "write through a kept stream", failures);
        Refused(() => _ = kept.Stream.Read(buffer), "read through a kept stream", failures);
        Refused(() => _ = kept.Owner.Memory, "a kept pool owner", failures);
        Refused(() => kept.OwnerMemory.Span.Fill(0xEE), "write to a kept owner's Memory", failures);
        Refused(() => _ = kept.Pool.Rent(10), "a rent from a kept pool", failures);
        Refused(() => kept.Buffers.Rent(10).Span.Fill(0xEE), "a rent from kept IRequestBuffers", failures);
        Refused(() => _ = kept.Buffers.CreateWriter(), "a writer from kept IRequestBuffers", failures);
        Refused(() => _ = kept.Buffers.CreateStream(), "a stream from kept IRequestBuffers", failures);
        Refused(() => _ = kept.Buffers.AsMemoryPool(), "a pool from kept IRequestBuffers", failures);
        Refused(() => kept.Buffers.ReadBodyAsync().AsTask().GetAwaiter().GetResult(), "a body read from kept IRequestBuffers", failures);
    }

    private static void Refused(Action use, string what, List<string> failures)
    {
        try
        {
            use();
            failures.Add($"{what} was not refused");
        }
        catch (Exception error) when (error is ObjectDisposedException or InvalidOperationException)
        {
        }
        catch (Exception error)
        {
            failures.Add($"{what} threw {error.GetType().Name}");
        }
    }

    private sealed record Kept(
        IRequestBuffers Buffers,
        Memory<byte> Rented,
        RequestBufferWriter Writer,
        RequestBufferStream Stream,
        MemoryPool<byte> Pool,
        IMemoryOwner<byte> Owner,
        Memory<byte> OwnerMemory,
        ReadOnlyMemory<byte> Body,
        ReadOnlySequence<byte> BodySequence);
}
