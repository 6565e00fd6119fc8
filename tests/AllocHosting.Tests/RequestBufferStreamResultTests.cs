using System.IO.Compression;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace AllocHosting.Tests;

/// <summary>RequestBufferResults.Stream: a RequestBufferStream's whole content sent from request memory with an exact Content-Length.</summary>
public class RequestBufferStreamResultTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4096)]
    [InlineData(200_000)]
    public async Task The_whole_content_is_sent_with_its_exact_length_whatever_the_position(int length)
    {
        byte[] payload = TestBytes.Pattern(length, length + 1);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            using RequestBufferStream stream = buffers.CreateStream();   // disposed before the result runs: the memory is the request's
            for (int offset = 0; offset < length; offset += 3_000)
            {
                stream.Write(payload, offset, Math.Min(3_000, length - offset));
            }

            stream.Position = length / 2;                                 // the position does not matter
            return RequestBufferResults.Stream(stream, "application/x-test");
        }));

        using HttpResponseMessage response = await app.Client.GetAsync("/");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(length, response.Content.Headers.ContentLength);
        Assert.Null(response.Headers.TransferEncodingChunked);
        Assert.Equal("application/x-test", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(payload, await response.Content.ReadAsByteArrayAsync());
    }

    [Fact]
    public async Task A_gzip_stream_written_by_stream_code_is_sent_with_a_status_and_the_default_content_type()
    {
        byte[] text = TestBytes.Pattern(100_000, 3);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", async (IRequestBuffers buffers) =>
        {
            RequestBufferStream stream = buffers.CreateStream();
            await using (var gzip = new GZipStream(stream, CompressionLevel.Fastest, leaveOpen: true))
            {
                await gzip.WriteAsync(text);
            }

            return RequestBufferResults.Stream(stream, statusCode: StatusCodes.Status202Accepted);
        }));

        using HttpResponseMessage response = await app.Client.GetAsync("/");
        byte[] body = await response.Content.ReadAsByteArrayAsync();

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("application/octet-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(body.Length, response.Content.Headers.ContentLength);
        using var unzipped = new MemoryStream();
        await using (var gunzip = new GZipStream(new MemoryStream(body), CompressionMode.Decompress))
        {
            await gunzip.CopyToAsync(unzipped);
        }

        Assert.Equal(text, unzipped.ToArray());
    }

    [Fact]
    public async Task Bad_arguments_a_disposed_stream_and_a_stream_of_an_ended_request_are_refused()
    {
        RequestBufferStream? stale = null;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            Assert.Throws<ArgumentNullException>(() => RequestBufferResults.Stream(null!));
            RequestBufferStream disposed = buffers.CreateStream();
            disposed.Dispose();
            Assert.Throws<ObjectDisposedException>(() => RequestBufferResults.Stream(disposed));
            stale = buffers.CreateStream();
            stale.Write("kept"u8);
            return "checked";
        }));

        Assert.Equal("checked", await app.Client.GetStringAsync("/"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released its chunks");
        Assert.Throws<ObjectDisposedException>(() => RequestBufferResults.Stream(stale!));
    }
}
