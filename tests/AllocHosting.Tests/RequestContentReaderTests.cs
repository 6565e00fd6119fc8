using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace AllocHosting.Tests;

/// <summary>IRequestBuffers.ReadContentAsync: an upstream response from a real Kestrel on 127.0.0.1 read into request memory.</summary>
public class RequestContentReaderTests
{
    // Upstream endpoints, and GET /read?path=P&max=M that reads P of the same server into request memory and answers
    // "<length> <SHA-256> <request memory used>" or the exception's type name.
    private static async Task<KestrelTestApp> StartAsync(TimeSpan? cancelAfter = null)
    {
        Uri? self = null;
        KestrelTestApp app = await KestrelTestApp.StartAsync(a =>
        {
            a.MapGet("/bytes/{length:int}", (int length) => Results.Bytes(TestBytes.Pattern(length, length), "application/octet-stream"));
            a.MapGet("/chunked/{length:int}", async (int length, HttpResponse response) =>
            {
                byte[] payload = TestBytes.Pattern(length, length);
                for (int offset = 0; offset < length; offset += 7_000)
                {
                    await response.Body.WriteAsync(payload.AsMemory(offset, Math.Min(7_000, length - offset)));
                    await response.Body.FlushAsync();
                }
            });
            a.MapGet("/stall", async (HttpResponse response, CancellationToken aborted) =>
            {
                await response.Body.WriteAsync("a first piece"u8.ToArray(), aborted);
                await response.Body.FlushAsync(aborted);
                await Task.Delay(Timeout.Infinite, aborted);
            });
            a.MapGet("/read", async (string path, long max, IRequestBuffers buffers, CancellationToken aborted) =>
            {
                using var client = new HttpClient { BaseAddress = self };
                using HttpResponseMessage upstream = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead, aborted);
                using var cancel = new CancellationTokenSource(cancelAfter ?? Timeout.InfiniteTimeSpan);
                long before = buffers.Used;
                try
                {
                    ReadOnlyMemory<byte> content = await buffers.ReadContentAsync(upstream.Content, max, cancel.Token);
                    return $"{content.Length} {Convert.ToHexString(SHA256.HashData(content.Span))} {buffers.Used - before}";
                }
                catch (Exception error)
                {
                    return error.GetType().Name;
                }
            });
        });
        self = app.Http1;
        return app;
    }

    private static string Expected(int length) => $"{length} {Convert.ToHexString(SHA256.HashData(TestBytes.Pattern(length, length)))}";

    private static async Task<string[]> ReadAsync(KestrelTestApp app, string path, long max)
    {
        using var client = new HttpClient { BaseAddress = app.Http1 };
        return (await client.GetStringAsync($"/read?path={Uri.EscapeDataString(path)}&max={max}")).Split(' ');
    }

    [Theory]
    [InlineData(1)]
    [InlineData(10_000)]
    [InlineData(65_535)]
    [InlineData(300_000)]
    public async Task A_response_with_a_Content_Length_is_read_whole_and_contiguous(int length)
    {
        await using KestrelTestApp app = await StartAsync();

        string[] answer = await ReadAsync(app, $"/bytes/{length}", 1_000_000);

        Assert.Equal(Expected(length), $"{answer[0]} {answer[1]}");
        if (length < 64 * 1024)
        {
            // The announced length sized the one segment (at least the writer's first 4 KiB): no join, no second segment.
            Assert.True(long.Parse(answer[2], CultureInfo.InvariantCulture) <= Math.Max(length + 16, 4096), $"{answer[2]} bytes of request memory for {length}");
        }

        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(150_000)]
    public async Task A_chunked_response_is_read_whole(int length)
    {
        await using KestrelTestApp app = await StartAsync();

        string[] answer = await ReadAsync(app, $"/chunked/{length}", 150_000);

        Assert.Equal(Expected(length), $"{answer[0]} {answer[1]}");
    }

    [Fact]
    public async Task An_empty_response_is_empty_memory()
    {
        await using KestrelTestApp app = await StartAsync();

        string[] answer = await ReadAsync(app, "/bytes/0", 0);

        Assert.Equal(Expected(0), $"{answer[0]} {answer[1]}");
        Assert.Equal("0", answer[2]);   // an announced empty content rents nothing
    }

    [Fact]
    public async Task A_response_larger_than_maxBytes_is_refused_announced_or_not_and_the_arena_is_released()
    {
        await using KestrelTestApp app = await StartAsync();

        Assert.Equal(nameof(InvalidDataException), (await ReadAsync(app, "/bytes/100001", 100_000))[0]);
        Assert.Equal(nameof(InvalidDataException), (await ReadAsync(app, "/chunked/100001", 100_000))[0]);
        Assert.Equal(Expected(100_000), string.Join(' ', (await ReadAsync(app, "/chunked/100000", 100_000))[..2]));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }

    [Fact]
    public async Task A_cancelled_read_of_a_stalled_upstream_throws_OperationCanceledException()
    {
        await using KestrelTestApp app = await StartAsync(cancelAfter: TimeSpan.FromMilliseconds(300));

        string[] answer = await ReadAsync(app, "/stall", 1_000);

        Assert.Contains(answer[0], new[] { nameof(OperationCanceledException), nameof(TaskCanceledException) });
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released its chunks");
    }

    [Fact]
    public async Task A_lying_Content_Length_is_a_hint_only()
    {
        var seen = new List<string>();
        await using KestrelTestApp app = await KestrelTestApp.StartAsync(a => a.MapGet("/", async (IRequestBuffers buffers) =>
        {
            // Announces 10 bytes, holds 100 000: all of it is read (within the limit), the announced size only sized the first segment.
            using var small = new StreamContent(new MemoryStream(TestBytes.Pattern(100_000, 5)));
            small.Headers.ContentLength = 10;
            seen.Add($"{(await buffers.ReadContentAsync(small, 200_000)).Length}");

            // Announces 1 000 000 (within the limit), holds 10: the request rents about what it received, not the announced size.
            long before = buffers.Used;
            using var large = new StreamContent(new MemoryStream(new byte[10]));
            large.Headers.ContentLength = 1_000_000;
            seen.Add($"{(await buffers.ReadContentAsync(large, 2_000_000)).Length} {buffers.Used - before <= 64 * 1024 + 16}");

            // Announces more than the limit: refused before reading.
            using var over = new StreamContent(new MemoryStream(new byte[10]));
            over.Headers.ContentLength = 1_001;
            InvalidDataException error = await Assert.ThrowsAsync<InvalidDataException>(async () => await buffers.ReadContentAsync(over, 1_000));
            seen.Add(error.Message);
            return "done";
        }));
        using var client = new HttpClient { BaseAddress = app.Http1 };

        Assert.Equal("done", await client.GetStringAsync("/"));

        Assert.Equal(["100000", "10 True", "The content announces 1001 bytes (Content-Length), more than the limit of 1000 bytes."], seen);
    }

    [Fact]
    public async Task An_upstream_that_sends_less_than_its_Content_Length_fails_the_read_with_an_IOException()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        Task upstream = Task.Run(async () =>
        {
            using TcpClient connection = await listener.AcceptTcpClientAsync();
            NetworkStream stream = connection.GetStream();
            var request = new byte[4096];
            _ = await stream.ReadAsync(request);
            await stream.WriteAsync(Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789"));
            await stream.FlushAsync();
        });
        var upstreamAddress = new Uri($"http://127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}/");
        await using KestrelTestApp app = await KestrelTestApp.StartAsync(a => a.MapGet("/", async (IRequestBuffers buffers) =>
        {
            using var client = new HttpClient { BaseAddress = upstreamAddress };
            using HttpResponseMessage response = await client.GetAsync("/", HttpCompletionOption.ResponseHeadersRead);
            try
            {
                await buffers.ReadContentAsync(response.Content, 10_000);
                return "read";
            }
            catch (IOException error)
            {
                return error.GetType().Name;
            }
        }));
        using var http = new HttpClient { BaseAddress = app.Http1 };

        Assert.Equal(nameof(HttpIOException), await http.GetStringAsync("/"));
        await upstream;
    }

    [Fact]
    public async Task Bad_arguments_are_refused()
    {
        await using KestrelTestApp app = await KestrelTestApp.StartAsync(a => a.MapGet("/", async (IRequestBuffers buffers) =>
        {
            using var content = new ByteArrayContent([1, 2, 3]);
            await Assert.ThrowsAsync<ArgumentNullException>(async () => await buffers.ReadContentAsync(null!, 10));
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await buffers.ReadContentAsync(content, -1));
            await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await buffers.ReadContentAsync(content, int.MaxValue + 1L));
            return (await buffers.ReadContentAsync(content, int.MaxValue)).Length;
        }));
        using var client = new HttpClient { BaseAddress = app.Http1 };

        Assert.Equal("3", await client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Buffers_kept_beyond_their_request_refuse_to_read_content()
    {
        IRequestBuffers? kept = null;
        await using KestrelTestApp app = await KestrelTestApp.StartAsync(a => a.MapGet("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            kept = buffers;
            using var content = new ByteArrayContent([1, 2, 3]);
            ReadOnlyMemory<byte> viaFeature = await context.Features.Get<IRequestArenaFeature>()!.ReadContentAsync(content, 3);
            return viaFeature.Length;
        }));
        using var client = new HttpClient { BaseAddress = app.Http1 };

        Assert.Equal("3", await client.GetStringAsync("/"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released its chunks");

        using var late = new ByteArrayContent([1]);
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await kept!.ReadContentAsync(late, 10));
    }
}
