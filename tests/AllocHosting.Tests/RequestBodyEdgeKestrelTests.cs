using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Metadata;

namespace AllocHosting.Tests;

/// <summary>
/// ReadBodyAsync and ReadBodySequenceAsync on a real Kestrel (127.0.0.1) against bodies that lie about their length,
/// that stop, that are reset, and at the sizes where the arena changes shape.
/// </summary>
public class RequestBodyEdgeKestrelTests
{
    private const int Limit = 10_000;

    // What each request's read ended in ("read" or the exception's type), in the order they ended.
    private readonly ConcurrentQueue<string> _outcomes = new();

    private Task<KestrelTestApp> StartAsync() => KestrelTestApp.StartAsync(a =>
    {
        a.MapPost("/memory", async (IRequestBuffers buffers) => await Outcome(async () =>
        {
            ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();
            return Describe(body.Span);
        }));
        a.MapPost("/sequence", async (IRequestBuffers buffers) => await Outcome(async () =>
        {
            ReadOnlySequence<byte> body = await buffers.ReadBodySequenceAsync();
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            foreach (ReadOnlyMemory<byte> segment in body)
            {
                hash.AppendData(segment.Span);
            }

            return $"{body.Length} {Convert.ToHexString(hash.GetHashAndReset())}";
        }));
        a.MapPost("/limited/memory", async (IRequestBuffers buffers) => await Outcome(async () => $"{(await buffers.ReadBodyAsync()).Length}"))
            .WithMetadata(new SizeLimit(Limit));
        a.MapPost("/limited/sequence", async (IRequestBuffers buffers) => await Outcome(async () => $"{(await buffers.ReadBodySequenceAsync()).Length}"))
            .WithMetadata(new SizeLimit(Limit));
    });

    private async Task<string> Outcome(Func<Task<string>> read)
    {
        try
        {
            string answer = await read();
            _outcomes.Enqueue("read");
            return answer;
        }
        catch (Exception error)
        {
            _outcomes.Enqueue(error.GetType().Name);
            throw;
        }
    }

    private static string Describe(ReadOnlySpan<byte> body) => $"{body.Length} {Convert.ToHexString(SHA256.HashData(body))}";

    private static async Task AssertReleasedAsync(KestrelTestApp app)
    {
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "every request released its arena");
    }

    [Theory]
    [InlineData("/memory")]
    [InlineData("/sequence")]
    public async Task A_body_shorter_than_its_Content_Length_then_a_half_close_fails_the_read_and_releases_the_arena(string path)
    {
        await using var app = await StartAsync();
        using RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);

        await connection.SendAsync(RawHttp1Connection.PostHead(path, 200_000), TestBytes.Pattern(70_000, 1));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse > 0, "the read took request memory");
        connection.CloseSend();

        // Kestrel answers 400 (unexpected end of request content) or just closes; never a body it made up.
        var response = await connection.ReadResponseAsync();
        Assert.True(response is null || response.Value.Status == 400, $"status {response?.Status}");
        await connection.ServerClosedAsync();
        await TestApp.EventuallyAsync(() => !_outcomes.IsEmpty, "the read ended");
        Assert.Contains(Assert.Single(_outcomes), new[] { nameof(OperationCanceledException), nameof(BadHttpRequestException) });
        await AssertReleasedAsync(app);
    }

    [Theory]
    [InlineData("/memory")]
    [InlineData("/sequence")]
    public async Task Bytes_beyond_the_Content_Length_are_not_part_of_the_body(string path)
    {
        byte[] first = TestBytes.Pattern(5_000, 2);
        byte[] second = TestBytes.Pattern(3_000, 3);
        await using var app = await StartAsync();
        using RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);

        // The first request announces 5000 bytes; the 3000 after them are the next request's, pipelined on the connection.
        await connection.SendAsync(
            RawHttp1Connection.PostHead(path, first.Length),
            [.. first, .. RawHttp1Connection.PostHead(path, second.Length, "Connection: close\r\n"), .. second]);

        var one = await connection.ReadResponseAsync();
        var two = await connection.ReadResponseAsync();
        Assert.Equal((200, Describe(first)), (one!.Value.Status, Encoding.UTF8.GetString(one.Value.Body)));
        Assert.Equal((200, Describe(second)), (two!.Value.Status, Encoding.UTF8.GetString(two.Value.Body)));
        await AssertReleasedAsync(app);
    }

    [Fact]
    public async Task Garbage_beyond_the_Content_Length_is_not_read_as_body()
    {
        byte[] body = TestBytes.Pattern(1_000, 4);
        await using var app = await StartAsync();
        using RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);

        await connection.SendAsync(RawHttp1Connection.PostHead("/memory", body.Length), [.. body, .. TestBytes.Pattern(4_000, 5)]);

        var response = await connection.ReadResponseAsync();
        Assert.Equal(Describe(body), Encoding.UTF8.GetString(response!.Value.Body));
        Assert.Equal("read", Assert.Single(_outcomes));
        await AssertReleasedAsync(app);
    }

    [Theory]
    [InlineData("/memory")]
    [InlineData("/sequence")]
    public async Task An_HTTP_2_stream_reset_mid_body_cancels_the_read_and_releases_the_arena(string path)
    {
        await using var app = await StartAsync();
        using HttpClient http2 = app.CreateHttp2Client();
        using var cancel = new CancellationTokenSource();
        var content = new StallingContent(100_000);

        Task<HttpResponseMessage> sending = http2.PostAsync(path, content, cancel.Token);
        await content.Stalled.WaitAsync(TimeSpan.FromSeconds(10));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse > 0, "the read took request memory");
        await cancel.CancelAsync();   // HttpClient resets the stream (RST_STREAM); the connection stays

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sending);
        await TestApp.EventuallyAsync(() => !_outcomes.IsEmpty, "the read ended");
        Assert.Equal(nameof(OperationCanceledException), Assert.Single(_outcomes));
        await AssertReleasedAsync(app);

        // The connection serves the next stream.
        byte[] next = TestBytes.Pattern(2_000, 6);
        using HttpResponseMessage after = await http2.PostAsync(path, new ByteArrayContent(next));
        Assert.Equal(Describe(next), await after.Content.ReadAsStringAsync());
    }

    public static TheoryData<string, string> Sizes => new()
    {
        { "empty", "/memory" }, { "empty", "/sequence" },
        { "one byte", "/memory" }, { "one byte", "/sequence" },
        { "one chunk", "/memory" }, { "one chunk", "/sequence" },
        { "one chunk + 1", "/memory" }, { "one chunk + 1", "/sequence" },
        { "max arena + 1", "/memory" }, { "max arena + 1", "/sequence" },
    };

    [Theory]
    [MemberData(nameof(Sizes))]
    public async Task Bodies_at_the_sizes_where_the_arena_changes_shape_are_read_exactly_on_HTTP_1_1_and_HTTP_2(string size, string path)
    {
        await using var app = await StartAsync();
        int length = size switch
        {
            "empty" => 0,
            "one byte" => 1,
            "one chunk" => app.Pool.ChunkCapacity,
            "one chunk + 1" => app.Pool.ChunkCapacity + 1,
            _ => (int)app.Pool.Options.MaxArenaSizePerRequest + 1,
        };
        byte[] body = TestBytes.Pattern(length, length);

        using RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);
        await connection.SendAsync(RawHttp1Connection.PostHead(path, length), body);
        var viaHttp1 = await connection.ReadResponseAsync();
        Assert.Equal((200, Describe(body)), (viaHttp1!.Value.Status, Encoding.UTF8.GetString(viaHttp1.Value.Body)));

        using HttpClient http2 = app.CreateHttp2Client();
        using HttpResponseMessage viaHttp2 = await http2.PostAsync(path, new ByteArrayContent(body));
        Assert.Equal(HttpVersion.Version20, viaHttp2.Version);
        Assert.Equal(Describe(body), await viaHttp2.Content.ReadAsStringAsync());

        Assert.All(_outcomes, outcome => Assert.Equal("read", outcome));
        await AssertReleasedAsync(app);
    }

    [Theory]
    [InlineData("/limited/memory")]
    [InlineData("/limited/sequence")]
    public async Task A_body_beyond_the_endpoints_size_limit_answers_413_on_HTTP_1_1_and_HTTP_2(string path)
    {
        await using var app = await StartAsync();
        using var http1 = new HttpClient { BaseAddress = app.Http1 };
        using HttpClient http2 = app.CreateHttp2Client();

        foreach (HttpClient client in new[] { http1, http2 })
        {
            using HttpResponseMessage announced = await client.PostAsync(path, new ByteArrayContent(new byte[Limit + 1]));
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, announced.StatusCode);

            using var unannounced = new StreamContent(new MemoryStream(new byte[5 * Limit]));
            unannounced.Headers.ContentLength = null;
            using HttpResponseMessage streamed = await client.PostAsync(path, unannounced);
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, streamed.StatusCode);

            using HttpResponseMessage atLimit = await client.PostAsync(path, new ByteArrayContent(new byte[Limit]));
            Assert.Equal($"{Limit}", await atLimit.Content.ReadAsStringAsync());
        }

        await AssertReleasedAsync(app);
    }

    [Fact]
    public async Task Connections_that_announce_a_megabyte_send_a_kilobyte_and_stall_hold_at_most_one_chunk_each()
    {
        const int Connections = 8;
        int entered = 0;
        var measure = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var capacities = new ConcurrentBag<long>();
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) => await Outcome(async () =>
        {
            Task<ReadOnlyMemory<byte>> reading = buffers.ReadBodyAsync().AsTask();
            Interlocked.Increment(ref entered);
            await measure.Task;
            capacities.Add(buffers.Capacity);
            return $"{(await reading).Length}";
        })));

        var connections = new List<RawHttp1Connection>();
        try
        {
            for (int i = 0; i < Connections; i++)
            {
                RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);
                connections.Add(connection);
                await connection.SendAsync(RawHttp1Connection.PostHead("/", 1024 * 1024), TestBytes.Pattern(1024, i));
            }

            await TestApp.EventuallyAsync(() => Volatile.Read(ref entered) == Connections, "every request is reading its body");
            await Task.Delay(200);   // the kilobytes have long arrived
            long liveWhileStalled = app.Pool.LiveBytes;
            int chunksWhileStalled = app.Pool.ChunksInUse;
            measure.SetResult();
            await TestApp.EventuallyAsync(() => capacities.Count == Connections, "every request measured its arena");

            Assert.All(capacities, capacity => Assert.InRange(capacity, 1, app.Pool.ChunkCapacity));
            Assert.InRange(chunksWhileStalled, 1, Connections);
            Assert.InRange(liveWhileStalled, 1, (long)Connections * app.Pool.ChunkSize);
        }
        finally
        {
            foreach (RawHttp1Connection connection in connections)
            {
                connection.Reset();
            }
        }

        await TestApp.EventuallyAsync(() => _outcomes.Count == Connections, "every read ended");
        Assert.All(_outcomes, outcome => Assert.Equal(nameof(OperationCanceledException), outcome));
        await AssertReleasedAsync(app);
    }

    // [RequestSizeLimit] for a minimal-API endpoint: routing applies it as the request's IHttpMaxRequestBodySizeFeature.
    private sealed class SizeLimit(long limit) : IRequestSizeLimitMetadata
    {
        public long? MaxRequestBodySize => limit;
    }

    // A body that sends its first bytes, then waits until the request is cancelled.
    private sealed class StallingContent(int first) : HttpContent
    {
        private readonly TaskCompletionSource _stalled = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Stalled => _stalled.Task;

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            await stream.WriteAsync(TestBytes.Pattern(first, 7), cancellationToken);
            await stream.FlushAsync(cancellationToken);
            _stalled.TrySetResult();
            await Task.Delay(TimeSpan.FromSeconds(10), cancellationToken);   // bounded: the test cancels long before
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }
    }
}
