using System.Buffers;
using System.IO.Compression;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace AllocHosting.Tests;

/// <summary>
/// The stream, the memory pool and the results on a real Kestrel (127.0.0.1), HTTP/1.1 on a raw socket (so the
/// response's framing is seen as sent) and HTTP/2.
/// </summary>
public class RequestBufferKestrelTests
{
    private static Task<KestrelTestApp> StartAsync() => KestrelTestApp.StartAsync(a =>
    {
        // The body, gzipped into a request stream, answered from the stream's segments.
        a.MapPost("/gzip", async (HttpRequest request, IRequestBuffers buffers) =>
        {
            using RequestBufferStream stream = buffers.CreateStream();
            await using (var gzip = new GZipStream(stream, CompressionLevel.Fastest, leaveOpen: true))
            {
                await request.Body.CopyToAsync(gzip);
            }

            return RequestBufferResults.Bytes(stream.GetReadOnlySequence(), "application/gzip");
        });

        // The body copied to the response through a pipe whose segments are request memory.
        a.MapPost("/echo", async (HttpContext context, IRequestBuffers buffers) =>
        {
            var pipe = new Pipe(new PipeOptions(pool: buffers.AsMemoryPool(), minimumSegmentSize: 8 * 1024, useSynchronizationContext: false));
            Task filling = FillAsync(context.Request.Body, pipe.Writer);
            await pipe.Reader.CopyToAsync(context.Response.Body);
            await filling;
            await pipe.Reader.CompleteAsync();
        });

        a.MapGet("/bytes", (IRequestBuffers buffers, int length) =>
        {
            Memory<byte> body = buffers.Rent(length);
            TestBytes.Pattern(length, length).CopyTo(body);
            return RequestBufferResults.Bytes(body, "application/x-test");
        });
        a.MapGet("/writer", (IRequestBuffers buffers, int length) =>
        {
            RequestBufferWriter writer = buffers.CreateWriter();
            byte[] pattern = TestBytes.Pattern(length, length);
            for (int offset = 0; offset < length; offset += 1_000)
            {
                writer.Write(pattern.AsSpan(offset, Math.Min(1_000, length - offset)));
            }

            return RequestBufferResults.Bytes(writer);
        });
        a.MapGet("/json", (int count) => RequestBufferResults.Json(
            new ResultsSummary(new string('j', count), count, [.. Enumerable.Range(0, count)]), ResultsJsonContext.Default.ResultsSummary));
    });

    private static async Task FillAsync(Stream body, PipeWriter writer)
    {
        await body.CopyToAsync(writer);
        await writer.CompleteAsync();
    }

    private static async Task<(int Status, Dictionary<string, string> Headers, byte[] Body)> Http1Async(KestrelTestApp app, params byte[][] request)
    {
        using RawHttp1Connection connection = await RawHttp1Connection.OpenAsync(app.Http1.Port);
        await connection.SendAsync(request);
        return (await connection.ReadResponseAsync())!.Value;
    }

    private static void AssertExactLength((int Status, Dictionary<string, string> Headers, byte[] Body) response)
    {
        Assert.Equal(200, response.Status);
        Assert.False(response.Headers.ContainsKey("transfer-encoding"), "the response is not chunked");
        Assert.Equal($"{response.Body.Length}", response.Headers["content-length"]);
    }

    private static byte[] Gunzip(byte[] compressed)
    {
        using var gunzip = new GZipStream(new MemoryStream(compressed), CompressionMode.Decompress);
        var plain = new MemoryStream();
        gunzip.CopyTo(plain);
        return plain.ToArray();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(300_000)]
    public async Task A_body_gzipped_into_a_request_stream_is_answered_from_its_segments_with_its_exact_length(int length)
    {
        byte[] text = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, length).Select(i => (char)('a' + (i % 7 == 0 ? i % 26 : 0)))));
        await using var app = await StartAsync();

        var viaHttp1 = await Http1Async(app, RawHttp1Connection.PostHead("/gzip", text.Length), text);
        AssertExactLength(viaHttp1);
        Assert.Equal("application/gzip", viaHttp1.Headers["content-type"]);
        Assert.Equal(text, Gunzip(viaHttp1.Body));

        using HttpClient http2 = app.CreateHttp2Client();
        using HttpResponseMessage viaHttp2 = await http2.PostAsync("/gzip", new ByteArrayContent(text));
        byte[] compressed = await viaHttp2.Content.ReadAsByteArrayAsync();
        Assert.Equal(compressed.Length, viaHttp2.Content.Headers.ContentLength);
        Assert.Equal(text, Gunzip(compressed));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its arena");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(64 * 1024 + 1)]
    [InlineData(400_000)]
    public async Task A_pipe_over_the_request_pool_copies_the_body_to_the_response(int length)
    {
        byte[] body = TestBytes.Pattern(length, 11);
        await using var app = await StartAsync();

        var viaHttp1 = await Http1Async(app, RawHttp1Connection.PostHead("/echo", body.Length), body);
        Assert.Equal(200, viaHttp1.Status);
        Assert.Equal(body, viaHttp1.Body);

        using HttpClient http2 = app.CreateHttp2Client();
        using var streamed = new StreamContent(new MemoryStream(body));
        streamed.Headers.ContentLength = null;
        using HttpResponseMessage viaHttp2 = await http2.PostAsync("/echo", streamed);
        Assert.Equal(body, await viaHttp2.Content.ReadAsByteArrayAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its arena");
    }

    [Fact]
    public async Task The_pipe_takes_its_segments_from_request_memory()
    {
        long used = -1;
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            var pipe = new Pipe(new PipeOptions(pool: buffers.AsMemoryPool(), useSynchronizationContext: false));
            Task filling = FillAsync(context.Request.Body, pipe.Writer);
            await pipe.Reader.CopyToAsync(context.Response.Body);
            await filling;
            used = buffers.Used;
        }));
        using var http1 = new HttpClient { BaseAddress = app.Http1 };

        using HttpResponseMessage response = await http1.PostAsync("/", new ByteArrayContent(TestBytes.Pattern(50_000, 12)));

        Assert.Equal(50_000, (await response.Content.ReadAsByteArrayAsync()).Length);
        Assert.True(used >= 4096, $"{used} bytes of request memory");
    }

    [Theory]
    [InlineData("/bytes", 0)]
    [InlineData("/bytes", 1)]
    [InlineData("/bytes", 200_000)]
    [InlineData("/writer", 1)]
    [InlineData("/writer", 200_000)]
    public async Task Bytes_are_sent_with_their_exact_Content_Length_and_not_chunked(string path, int length)
    {
        byte[] expected = TestBytes.Pattern(length, length);
        await using var app = await StartAsync();

        var viaHttp1 = await Http1Async(app, RawHttp1Connection.GetHead($"{path}?length={length}"));
        AssertExactLength(viaHttp1);
        Assert.Equal(expected, viaHttp1.Body);

        using HttpClient http2 = app.CreateHttp2Client();
        using HttpResponseMessage viaHttp2 = await http2.GetAsync($"{path}?length={length}");
        Assert.Equal(HttpVersion.Version20, viaHttp2.Version);
        Assert.Equal(length, viaHttp2.Content.Headers.ContentLength);
        Assert.Equal(expected, await viaHttp2.Content.ReadAsByteArrayAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its arena");
    }

    [Theory]
    [InlineData(0)]
    [InlineData(30_000)]
    public async Task Json_is_sent_with_its_exact_Content_Length_and_not_chunked(int count)
    {
        var value = new ResultsSummary(new string('j', count), count, [.. Enumerable.Range(0, count)]);
        byte[] expected = JsonSerializer.SerializeToUtf8Bytes(value, ResultsJsonContext.Default.ResultsSummary);
        await using var app = await StartAsync();

        var viaHttp1 = await Http1Async(app, RawHttp1Connection.GetHead($"/json?count={count}"));
        AssertExactLength(viaHttp1);
        Assert.Equal("application/json; charset=utf-8", viaHttp1.Headers["content-type"]);
        Assert.Equal(expected, viaHttp1.Body);

        using HttpClient http2 = app.CreateHttp2Client();
        using HttpResponseMessage viaHttp2 = await http2.GetAsync($"/json?count={count}");
        Assert.Equal(expected.Length, viaHttp2.Content.Headers.ContentLength);
        Assert.Equal(expected, await viaHttp2.Content.ReadAsByteArrayAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its arena");
    }
}
