using System.Buffers;
using System.IO.Compression;
using System.IO.Pipelines;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace AllocHosting.Tests;

/// <summary>
/// The code of README.md's "Request memory, path by path", compiled and run: each Map… method holds one of its code
/// blocks verbatim (the last test checks that every block of the section is here), mapped on a test server and called.
/// </summary>
public partial class ReadmeRequestMemoryExampleTests
{
    private static void MapRentAndWriter(WebApplication app)
    {
        app.MapPost("/upper", async (HttpRequest request, IRequestBuffers buffers) =>
        {
            Memory<byte> input = buffers.Rent(4096);                 // request memory, zeroed
            int read = await request.Body.ReadAtLeastAsync(input, input.Length, throwOnEndOfStream: false);

            RequestBufferWriter output = buffers.CreateWriter();     // an IBufferWriter<byte> that grows in the arena
            Ascii.ToUpper(input.Span[..read], output.GetSpan(read), out int written);
            output.Advance(written);
            return RequestBufferResults.Bytes(output, "text/plain");
        });
    }

    private static void MapStream(WebApplication app)
    {
        app.MapGet("/report.gz", (IRequestBuffers buffers) =>
        {
            RequestBufferStream stream = buffers.CreateStream();     // the request's MemoryStream
            using (var gzip = new GZipStream(stream, CompressionLevel.Fastest, leaveOpen: true))
            {
                for (int i = 0; i < 1000; i++)
                {
                    gzip.Write(Encoding.UTF8.GetBytes($"{i},{i * i}\n"));
                }
            }

            return RequestBufferResults.Bytes(stream.GetReadOnlySequence(), "application/gzip");
        });
    }

    private static void MapPool(WebApplication app)
    {
        app.MapPost("/echo", async (HttpContext context, IRequestBuffers buffers) =>
        {
            var options = new StreamPipeReaderOptions(pool: buffers.AsMemoryPool());
            PipeReader body = PipeReader.Create(context.Request.Body, options);
            await body.CopyToAsync(context.Response.Body);           // the pipe's segments are request memory
            await body.CompleteAsync();
        });
    }

    private static void MapBody(WebApplication app)
    {
        app.MapPost("/sha256", async (IRequestBuffers buffers) =>
        {
            ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();   // the whole body, contiguous
            return Convert.ToHexString(SHA256.HashData(body.Span));
        });

        app.MapPost("/sum", async (IRequestBuffers buffers) =>
        {
            ReadOnlySequence<byte> body = await buffers.ReadBodySequenceAsync();   // segments, no join
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            foreach (ReadOnlyMemory<byte> segment in body)
            {
                hash.AppendData(segment.Span);
            }

            long sum = 0;
            var json = new Utf8JsonReader(body);
            while (json.Read())
            {
                if (json.TokenType == JsonTokenType.Number)
                {
                    sum += json.GetInt64();
                }
            }

            return $"{sum} {Convert.ToHexString(hash.GetHashAndReset())}";
        });
    }

    private static void MapResults(WebApplication app)
    {
        app.MapGet("/dots", (IRequestBuffers buffers, int count) =>
        {
            Memory<byte> body = buffers.Rent(count);
            body.Span.Fill((byte)'.');
            return RequestBufferResults.Bytes(body, "text/plain");   // Content-Length: count
        });

        app.MapGet("/summary", () =>
            RequestBufferResults.Json(new Summary("a", 3), AppJsonContext.Default.Summary));
    }

    [Fact]
    public async Task Rent_and_CreateWriter_upper_case_the_body()
    {
        await using var app = await TestApp.StartAsync(MapRentAndWriter);

        using HttpResponseMessage response = await app.Client.PostAsync("/upper", new StringContent("hello, arena"));

        Assert.Equal("HELLO, ARENA", await response.Content.ReadAsStringAsync());
        Assert.Equal(12, response.Content.Headers.ContentLength);
    }

    [Fact]
    public async Task CreateStream_answers_a_gzipped_report()
    {
        await using var app = await TestApp.StartAsync(MapStream);

        using HttpResponseMessage response = await app.Client.GetAsync("/report.gz");
        byte[] compressed = await response.Content.ReadAsByteArrayAsync();
        using var gunzip = new GZipStream(new MemoryStream(compressed), CompressionMode.Decompress);
        using var reader = new StreamReader(gunzip);

        Assert.Equal(compressed.Length, response.Content.Headers.ContentLength);
        Assert.Equal(string.Concat(Enumerable.Range(0, 1000).Select(i => $"{i},{i * i}\n")), await reader.ReadToEndAsync());
    }

    [Fact]
    public async Task AsMemoryPool_echoes_the_body_through_a_pipe()
    {
        byte[] body = TestBytes.Pattern(100_000, 1);
        await using var app = await TestApp.StartAsync(MapPool);

        using HttpResponseMessage response = await app.Client.PostAsync("/echo", new ByteArrayContent(body));

        Assert.Equal(body, await response.Content.ReadAsByteArrayAsync());
    }

    [Fact]
    public async Task ReadBodyAsync_hashes_and_ReadBodySequenceAsync_parses_and_hashes()
    {
        byte[] body = Encoding.UTF8.GetBytes($"[{string.Join(',', Enumerable.Range(1, 30_000))}]");   // over 100 KB: several segments
        string sha256 = Convert.ToHexString(SHA256.HashData(body));
        await using var app = await TestApp.StartAsync(MapBody);

        using HttpResponseMessage hashed = await app.Client.PostAsync("/sha256", new ByteArrayContent(body));
        using HttpResponseMessage summed = await app.Client.PostAsync("/sum", new ByteArrayContent(body));

        Assert.Equal(sha256, await hashed.Content.ReadAsStringAsync());
        Assert.Equal($"{30_000L * 30_001 / 2} {sha256}", await summed.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Bytes_and_Json_answer_with_their_exact_length()
    {
        await using var app = await TestApp.StartAsync(MapResults);

        using HttpResponseMessage dots = await app.Client.GetAsync("/dots?count=5");
        using HttpResponseMessage summary = await app.Client.GetAsync("/summary");

        Assert.Equal(".....", await dots.Content.ReadAsStringAsync());
        Assert.Equal(5, dots.Content.Headers.ContentLength);
        string json = await summary.Content.ReadAsStringAsync();
        Assert.Equal("""{"Name":"a","Count":3}""", json);
        Assert.Equal(json.Length, summary.Content.Headers.ContentLength);
        Assert.Null(summary.Headers.TransferEncodingChunked);
    }

    [Fact]
    public void Every_code_block_of_the_README_section_is_compiled_here()
    {
        var section = ReadmeSection.Read("## Request memory, path by path", nameof(ReadmeRequestMemoryExampleTests));
        Assert.True(section.CodeBlocks.Length >= 5, $"{section.CodeBlocks.Length} code blocks");
        section.AssertEveryBlockIsIn("ReadmeRequestMemoryExampleTests.cs");
    }

    public sealed record Summary(string Name, int Count);

    [JsonSerializable(typeof(Summary))]
    internal sealed partial class AppJsonContext : JsonSerializerContext;
}
