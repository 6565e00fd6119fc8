using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;

namespace AllocHosting.Tests;

/// <summary>IRequestBuffers.ReadBodyAsync on a real Kestrel bound to 127.0.0.1: chunked and HTTP/2 bodies, a client that aborts.</summary>
public class RequestBodyReaderKestrelTests
{
    private static Task<KestrelTestApp> StartAsync(TaskCompletionSource<string>? outcome = null) => KestrelTestApp.StartAsync(a =>
        a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            try
            {
                ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();
                outcome?.TrySetResult("read");
                return $"{body.Length} {Convert.ToHexString(SHA256.HashData(body.Span))}";
            }
            catch (Exception error)
            {
                outcome?.TrySetResult(error.GetType().Name);
                throw;
            }
        }));

    [Theory]
    [InlineData(1)]
    [InlineData(64 * 1024 + 1)]
    [InlineData(320 * 1024)]
    public async Task Chunked_HTTP_1_1_and_HTTP_2_bodies_are_read_whole(int length)
    {
        byte[] body = TestBytes.Pattern(length, length);
        string expected = $"{length} {Convert.ToHexString(SHA256.HashData(body))}";
        await using var app = await StartAsync();

        using var http1 = new HttpClient { BaseAddress = app.Http1 };
        using var chunked = new StreamContent(new MemoryStream(body));
        chunked.Headers.ContentLength = null;
        using HttpResponseMessage viaChunks = await http1.PostAsync("/", chunked);
        Assert.Equal(expected, await viaChunks.Content.ReadAsStringAsync());

        using HttpClient http2 = app.CreateHttp2Client();
        using HttpResponseMessage viaHttp2 = await http2.PostAsync("/", new ByteArrayContent(body));
        Assert.Equal(HttpVersion.Version20, viaHttp2.Version);
        Assert.Equal(expected, await viaHttp2.Content.ReadAsStringAsync());

        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }

    [Fact]
    public async Task A_client_that_waits_for_100_Continue_gets_it_and_its_body_is_read_whole()
    {
        // The read first takes what has arrived without waiting (TryRead); a client that sends its body only
        // after 100 Continue must still be asked for it.
        byte[] body = TestBytes.Pattern(5000, 9);
        await using var app = await StartAsync();
        using var connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);

        await connection.SendAsync(RawHttp1Connection.PostHead("/", body.Length, "Expect: 100-continue\r\n"));
        var interim = await connection.ReadResponseAsync();
        Assert.Equal(100, interim?.Status);
        await connection.SendAsync(body);
        var response = await connection.ReadResponseAsync();

        Assert.Equal(200, response?.Status);
        Assert.Equal($"{body.Length} {Convert.ToHexString(SHA256.HashData(body))}", Encoding.UTF8.GetString(response!.Value.Body));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released its chunks");
    }

    [Fact]
    public async Task A_client_that_aborts_mid_body_cancels_the_read_and_the_arena_is_released()
    {
        var outcome = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await StartAsync(outcome);

        using (var client = new TcpClient())
        {
            await client.ConnectAsync(IPAddress.Loopback, app.Http1.Port);
            NetworkStream stream = client.GetStream();
            string head = $"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {1024 * 1024}\r\n\r\n";
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
            await stream.WriteAsync(new byte[100_000]);
            await stream.FlushAsync();
            await Task.Delay(200);
            client.Client.LingerState = new LingerOption(true, 0);   // a reset, as a client that goes away
        }

        string seen = await outcome.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(nameof(OperationCanceledException), seen);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the aborted request released its chunks");
    }

    // The read starts only after the client went away, with part of the body already received: the
    // synchronous first part of the read (what has arrived, taken without waiting) must fail as the
    // waiting part does, with OperationCanceledException, and the arena is released.
    [Fact]
    public async Task A_read_that_starts_after_the_client_aborted_is_canceled_and_the_arena_is_released()
    {
        var outcome = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (Microsoft.AspNetCore.Http.HttpContext context, IRequestBuffers buffers) =>
        {
            buffers.Rent(100);   // the request holds a chunk before it reads
            started.SetResult();
            try
            {
                await Task.Delay(Timeout.Infinite, context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
            }

            try
            {
                ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();
                outcome.TrySetResult($"read {body.Length}");
                return body.Length;
            }
            catch (Exception error)
            {
                outcome.TrySetResult(error.GetType().Name);
                throw;
            }
        }));

        using (RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port))
        {
            await connection.SendAsync(RawHttp1Connection.PostHead("/", 1024 * 1024), new byte[20_000]);
            await started.Task.WaitAsync(TimeSpan.FromSeconds(10));
            connection.Reset();   // as a client that goes away
        }

        string seen = await outcome.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(nameof(OperationCanceledException), seen);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the aborted request released its chunks");
    }

    // Two tasks of one request read the body at once (two filters, or Task.WhenAll over two parsers)
    // while it arrives in parts: both get the whole body, the same bytes, never half each.
    [Fact]
    public async Task Two_reads_of_one_request_at_once_both_get_the_whole_body()
    {
        byte[] body = TestBytes.Pattern(200_000, 5);
        string expected = $"{body.Length} {Convert.ToHexString(SHA256.HashData(body))}";
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            using var start = new Barrier(2);
            Task<ReadOnlyMemory<byte>> Read() => Task.Run(() =>
            {
                start.SignalAndWait();
                return buffers.ReadBodyAsync().AsTask();
            });

            ReadOnlyMemory<byte>[] reads = await Task.WhenAll(Read(), Read());
            return string.Join(" | ", reads.Select(read => $"{read.Length} {Convert.ToHexString(SHA256.HashData(read.Span))}"));
        }));

        using var connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);
        await connection.SendAsync(RawHttp1Connection.PostHead("/", body.Length));
        for (int sent = 0; sent < body.Length; sent += 20_000)
        {
            await connection.SendAsync(body[sent..Math.Min(sent + 20_000, body.Length)]);
            await Task.Delay(10);
        }

        var response = await connection.ReadResponseAsync();
        Assert.Equal(200, response?.Status);
        Assert.Equal($"{expected} | {expected}", Encoding.UTF8.GetString(response!.Value.Body));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released its chunks");
    }

    [Fact]
    public async Task A_body_beyond_the_request_limit_answers_413_on_Kestrel()
    {
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (Microsoft.AspNetCore.Http.HttpContext context, IRequestBuffers buffers) =>
        {
            context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>()!.MaxRequestBodySize = 10_000;
            return (await buffers.ReadBodyAsync()).Length;
        }));
        using var http1 = new HttpClient { BaseAddress = app.Http1 };

        using HttpResponseMessage announced = await http1.PostAsync("/", new ByteArrayContent(new byte[20_000]));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, announced.StatusCode);

        using var chunked = new StreamContent(new MemoryStream(new byte[50_000]));
        chunked.Headers.ContentLength = null;
        using HttpResponseMessage unannounced = await http1.PostAsync("/", chunked);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, unannounced.StatusCode);

        using HttpResponseMessage atLimit = await http1.PostAsync("/", new ByteArrayContent(new byte[10_000]));
        Assert.Equal("10000", await atLimit.Content.ReadAsStringAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }
}
