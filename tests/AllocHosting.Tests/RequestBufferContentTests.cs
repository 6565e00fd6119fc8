using System.Buffers;
using System.Net;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace AllocHosting.Tests;

/// <summary>RequestBufferContent: request memory sent upstream with HttpClient to a real Kestrel on 127.0.0.1, with an exact Content-Length.</summary>
public class RequestBufferContentTests
{
    // POST /echo answers "<Content-Length or chunked> <length received> <SHA-256>"; GET /send/{kind}?length=N builds N bytes in
    // request memory as {kind} and posts them to /echo of the same server, answering what /echo said.
    private static async Task<KestrelTestApp> StartAsync()
    {
        Uri? self = null;
        KestrelTestApp app = await KestrelTestApp.StartAsync(a =>
        {
            a.MapPost("/echo", async (HttpRequest request) =>
            {
                using var body = new MemoryStream();
                await request.Body.CopyToAsync(body);
                string framing = request.ContentLength?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "chunked";
                return $"{framing} {body.Length} {Convert.ToHexString(SHA256.HashData(body.ToArray()))}";
            });
            a.MapGet("/send/{kind}", async (string kind, int length, IRequestBuffers buffers) =>
            {
                byte[] payload = TestBytes.Pattern(length, length);
                using RequestBufferContent content = Create(kind, payload, buffers);
                Assert.Equal(length, content.Headers.ContentLength);
                using var client = new HttpClient { BaseAddress = self };
                using HttpResponseMessage response = await client.PostAsync("/echo", content);
                return await response.Content.ReadAsStringAsync();
            });
        });
        self = app.Http1;
        return app;
    }

    private static RequestBufferContent Create(string kind, byte[] payload, IRequestBuffers buffers)
    {
        switch (kind)
        {
            case "memory":
                Memory<byte> memory = buffers.Rent(payload.Length);
                payload.CopyTo(memory);
                return new RequestBufferContent((ReadOnlyMemory<byte>)memory);
            case "writer":
            case "sequence":
                RequestBufferWriter writer = buffers.CreateWriter();
                for (int offset = 0; offset < payload.Length; offset += 5_000)
                {
                    writer.Write(payload.AsSpan(offset, Math.Min(5_000, payload.Length - offset)));
                }

                return kind == "writer" ? new RequestBufferContent(writer) : new RequestBufferContent(writer.WrittenSequence);
            default:
                using (RequestBufferStream stream = buffers.CreateStream())
                {
                    stream.Write(payload);
                    stream.Position = 1;   // the whole content is sent, whatever the position
                    return new RequestBufferContent(stream);
                }
        }
    }

    [Theory]
    [InlineData("memory", 0)]
    [InlineData("memory", 100_000)]
    [InlineData("sequence", 1)]
    [InlineData("sequence", 200_000)]
    [InlineData("writer", 4097)]
    [InlineData("writer", 200_000)]
    [InlineData("stream", 0)]
    [InlineData("stream", 200_000)]
    public async Task Request_memory_is_sent_upstream_whole_with_an_exact_Content_Length(string kind, int length)
    {
        await using KestrelTestApp app = await StartAsync();
        using var client = new HttpClient { BaseAddress = app.Http1 };

        string echoed = await client.GetStringAsync($"/send/{kind}?length={length}");

        byte[] payload = TestBytes.Pattern(length, length);
        Assert.Equal($"{length} {length} {Convert.ToHexString(SHA256.HashData(payload))}", echoed);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }

    [Fact]
    public async Task Content_can_be_sent_twice_read_back_without_a_copy_and_sent_synchronously()
    {
        await using KestrelTestApp app = await StartAsync();
        using var client = new HttpClient { BaseAddress = app.Http1 };
        byte[] payload = TestBytes.Pattern(10_000, 9);
        var first = new BufferSegmentForTest(payload.AsMemory(0, 3_000));
        ReadOnlySequence<byte> sequence = new(first, 0, first.Append(payload.AsMemory(3_000)), 7_000);
        using var content = new RequestBufferContent(sequence);
        string expected = $"10000 10000 {Convert.ToHexString(SHA256.HashData(payload))}";

        using HttpResponseMessage once = await client.PostAsync("/echo", content);
        using HttpResponseMessage twice = await client.PostAsync("/echo", content);
        using HttpResponseMessage synchronous = client.Send(new HttpRequestMessage(HttpMethod.Post, "/echo") { Content = content });

        Assert.Equal(expected, await once.Content.ReadAsStringAsync());
        Assert.Equal(expected, await twice.Content.ReadAsStringAsync());
        Assert.Equal(expected, await synchronous.Content.ReadAsStringAsync());
        Assert.Equal(10_000, content.Length);

        Stream read = await content.ReadAsStreamAsync();
        Assert.False(read.CanWrite);
        read.Position = 2_999;
        var buffer = new byte[2];
        Assert.Equal(2, await read.ReadAsync(buffer));
        Assert.Equal(payload.AsSpan(2_999, 2).ToArray(), buffer);
        read.Position = 0;
        using var copy = new MemoryStream();
        await read.CopyToAsync(copy);
        Assert.Equal(payload, copy.ToArray());
        Assert.Equal(payload, await content.ReadAsByteArrayAsync());
    }

    [Fact]
    public async Task Content_over_request_memory_used_after_the_request_throws_ObjectDisposedException()
    {
        RequestBufferContent? stale = null;
        await using KestrelTestApp app = await KestrelTestApp.StartAsync(a =>
        {
            a.MapPost("/echo", () => "echo");
            a.MapGet("/keep", (IRequestBuffers buffers) =>
            {
                RequestBufferWriter writer = buffers.CreateWriter();
                writer.Write(TestBytes.Pattern(20_000, 1));
                stale = new RequestBufferContent(writer);
                return "kept";
            });
        });
        using var client = new HttpClient { BaseAddress = app.Http1 };
        Assert.Equal("kept", await client.GetStringAsync("/keep"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released its chunks");

        Exception sent = await Assert.ThrowsAnyAsync<Exception>(() => client.PostAsync("/echo", stale));
        Exception read = await Assert.ThrowsAnyAsync<Exception>(() => stale!.ReadAsByteArrayAsync());
        using Stream readBack = await stale!.ReadAsStreamAsync();
        Assert.Throws<ObjectDisposedException>(() => readBack.ReadByte());

        Assert.True(HasObjectDisposed(sent), sent.ToString());
        Assert.True(HasObjectDisposed(read), read.ToString());
        Assert.Equal(20_000, stale!.Headers.ContentLength);   // the length is known without touching the memory
    }

    [Fact]
    public void Bad_arguments_are_refused()
    {
        Assert.Throws<ArgumentNullException>(() => new RequestBufferContent((RequestBufferWriter)null!));
        Assert.Throws<ArgumentNullException>(() => new RequestBufferContent((RequestBufferStream)null!));
    }

    private static bool HasObjectDisposed(Exception? error)
    {
        for (; error is not null; error = error.InnerException)
        {
            if (error is ObjectDisposedException)
            {
                return true;
            }
        }

        return false;
    }

    private sealed class BufferSegmentForTest : ReadOnlySequenceSegment<byte>
    {
        public BufferSegmentForTest(ReadOnlyMemory<byte> memory) => Memory = memory;

        public BufferSegmentForTest Append(ReadOnlyMemory<byte> memory)
        {
            var next = new BufferSegmentForTest(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
