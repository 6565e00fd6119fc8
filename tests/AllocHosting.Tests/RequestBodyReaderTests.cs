using System.Buffers;
using System.Net;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace AllocHosting.Tests;

/// <summary>IRequestBuffers.ReadBodyAsync and ReadBodySequenceAsync on the test server.</summary>
public class RequestBodyReaderTests
{
    private static Task<TestApp> StartAsync() => TestApp.StartAsync(a =>
    {
        a.MapPost("/memory", async (IRequestBuffers buffers) =>
        {
            ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();
            return $"{body.Length} {Convert.ToHexString(SHA256.HashData(body.Span))}";
        });
        a.MapPost("/sequence", async (IRequestBuffers buffers) =>
        {
            ReadOnlySequence<byte> body = await buffers.ReadBodySequenceAsync();
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            foreach (ReadOnlyMemory<byte> segment in body)
            {
                hash.AppendData(segment.Span);
            }

            return $"{body.Length} {Convert.ToHexString(hash.GetHashAndReset())}";
        });
    }, o => o.MemoryBudget = 16 * 1024 * 1024);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4096)]
    [InlineData(64 * 1024)]
    [InlineData(64 * 1024 + 1)]
    [InlineData(320 * 1024)]
    [InlineData(3 * 1024 * 1024)]   // beyond the default per-request maximum: more chunks of the pool
    public async Task The_whole_body_is_read_contiguous_and_as_a_sequence(int length)
    {
        byte[] body = TestBytes.Pattern(length, length);
        string expected = $"{length} {Convert.ToHexString(SHA256.HashData(body))}";
        await using var app = await StartAsync();

        foreach (string path in new[] { "/memory", "/sequence" })
        {
            using HttpResponseMessage response = await app.Client.PostAsync(path, new ByteArrayContent(body));
            Assert.Equal(expected, await response.Content.ReadAsStringAsync());
        }

        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(20_000)]
    [InlineData(64 * 1024)]
    public async Task A_body_of_up_to_a_chunk_with_its_length_announced_lands_in_one_segment_and_is_never_copied(int length)
    {
        byte[] body = TestBytes.Pattern(length, 3);
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            ReadOnlySequence<byte> sequence = await buffers.ReadBodySequenceAsync();
            ReadOnlyMemory<byte> memory = await buffers.ReadBodyAsync();
            bool sameMemory = sequence.IsSingleSegment && sequence.First.Equals(memory);
            return $"{sequence.Length} {sameMemory} {buffers.Used}";
        }));

        using HttpResponseMessage response = await app.Client.PostAsync("/", new ByteArrayContent(body));
        string text = await response.Content.ReadAsStringAsync();
        string[] result = text.Split(' ');
        Assert.Equal(length.ToString(System.Globalization.CultureInfo.InvariantCulture), result[0]);
        Assert.True(result[1] == "True", text);
        // The first segment is at least 4 KiB; nothing else is rented (no second segment, no join).
        Assert.True(long.Parse(result[2], System.Globalization.CultureInfo.InvariantCulture) < Math.Max(length, 4096) + 16, text);
    }

    [Fact]
    public async Task The_endpoints_RequestSizeLimit_is_honoured_on_a_server_without_a_body_size_feature()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            try
            {
                return $"{context.Features.Get<IHttpMaxRequestBodySizeFeature>() is null} {(await buffers.ReadBodyAsync()).Length}";
            }
            catch (BadHttpRequestException error)
            {
                return $"{error.StatusCode}";
            }
        }).WithMetadata(new Microsoft.AspNetCore.Mvc.RequestSizeLimitAttribute(10_000)));

        using HttpResponseMessage atLimit = await app.Client.PostAsync("/", new ByteArrayContent(new byte[10_000]));
        Assert.Equal("True 10000", await atLimit.Content.ReadAsStringAsync());

        using var unannounced = new StreamContent(new MemoryStream(new byte[10_001]));
        unannounced.Headers.ContentLength = null;
        using HttpResponseMessage beyond = await app.Client.PostAsync("/", unannounced);
        Assert.Equal("413", await beyond.Content.ReadAsStringAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }

    [Fact]
    public async Task A_chunked_body_without_content_length_is_read_whole()
    {
        byte[] body = TestBytes.Pattern(150_000, 5);
        await using var app = await StartAsync();
        using var content = new StreamContent(new MemoryStream(body));
        content.Headers.ContentLength = null;

        using HttpResponseMessage response = await app.Client.PostAsync("/memory", content);

        Assert.Equal($"{body.Length} {Convert.ToHexString(SHA256.HashData(body))}", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_body_beyond_the_request_limit_is_refused_with_413_and_nothing_leaks()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            // The test server has no body-size limit of its own: give the request one, as Kestrel and [RequestSizeLimit] do.
            context.Features.Set<IHttpMaxRequestBodySizeFeature>(new TestBodySizeLimit { MaxRequestBodySize = 10_000 });
            try
            {
                await buffers.ReadBodyAsync();
                return "read";
            }
            catch (BadHttpRequestException error)
            {
                return $"{error.StatusCode}";
            }
        }));

        using var announced = await app.Client.PostAsync("/", new ByteArrayContent(new byte[10_001]));
        Assert.Equal("413", await announced.Content.ReadAsStringAsync());

        // Without Content-Length the limit is found while reading.
        using var chunked = new StreamContent(new MemoryStream(new byte[50_000]));
        chunked.Headers.ContentLength = null;
        using var unannounced = await app.Client.PostAsync("/", chunked);
        Assert.Equal("413", await unannounced.Content.ReadAsStringAsync());

        using var atLimit = await app.Client.PostAsync("/", new ByteArrayContent(new byte[10_000]));
        Assert.Equal("read", await atLimit.Content.ReadAsStringAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }

    [Fact]
    public async Task Memory_follows_the_bytes_received_not_the_length_announced()
    {
        var received = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        long capacityWhileWaiting = -1;
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            Task<ReadOnlyMemory<byte>> reading = buffers.ReadBodyAsync().AsTask();
            await received.Task;
            await Task.Delay(100);
            capacityWhileWaiting = buffers.Capacity;
            release.SetResult();
            return (await reading).Length;
        }));

        // Announce 1 MiB, send 1 KiB, then wait before sending the rest.
        var body = new SlowBody(1024, 1024 * 1024, received, release.Task);
        using var content = new StreamContent(body);
        content.Headers.ContentLength = 1024 * 1024;
        using HttpResponseMessage response = await app.Client.PostAsync("/", content);

        Assert.Equal($"{1024 * 1024}", await response.Content.ReadAsStringAsync());
        Assert.InRange(capacityWhileWaiting, 1, 64 * 1024);
    }

    [Fact]
    public async Task A_second_read_returns_the_same_bytes_and_a_stale_reader_throws()
    {
        IRequestBuffers? kept = null;
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            kept = buffers;
            ReadOnlyMemory<byte> first = await buffers.ReadBodyAsync();
            ReadOnlyMemory<byte> second = await buffers.ReadBodyAsync();
            ReadOnlySequence<byte> sequence = await buffers.ReadBodySequenceAsync();
            return first.Span.SequenceEqual(second.Span) && sequence.Length == first.Length && first.Length == 5000;
        }));

        using HttpResponseMessage response = await app.Client.PostAsync("/", new ByteArrayContent(TestBytes.Pattern(5000, 9)));
        Assert.Equal("true", await response.Content.ReadAsStringAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");

        await Assert.ThrowsAsync<InvalidOperationException>(async () => await kept!.ReadBodyAsync());
    }

    [Fact]
    public async Task A_read_cancelled_through_CancelPendingRead_throws_instead_of_returning_part_of_the_body()
    {
        var received = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            Task<ReadOnlyMemory<byte>> reading = buffers.ReadBodyAsync().AsTask();
            await received.Task;
            await Task.Delay(50);
            context.Request.BodyReader.CancelPendingRead();
            try
            {
                return $"read {(await reading).Length}";
            }
            catch (OperationCanceledException)
            {
                return "cancelled";
            }
            finally
            {
                release.SetResult();
            }
        }));

        var body = new SlowBody(1024, 4096, received, release.Task);
        using var content = new StreamContent(body);
        using HttpResponseMessage response = await app.Client.PostAsync("/", content);

        Assert.Equal("cancelled", await response.Content.ReadAsStringAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released its chunks");
    }

    // A read canceled after it took part of the body: the pipe has given those bytes away, so a later read
    // of the request must fail the same way, never return the rest as if it were the whole body.
    [Fact]
    public async Task A_read_after_a_read_that_failed_mid_body_fails_the_same_way_instead_of_returning_the_rest()
    {
        var received = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            using var timeout = new CancellationTokenSource();
            Task<ReadOnlyMemory<byte>> first = buffers.ReadBodyAsync(timeout.Token).AsTask();
            await received.Task;
            await Task.Delay(50);
            await timeout.CancelAsync();
            string outcome = await Outcome(first);
            release.SetResult();
            await Task.Delay(50);   // the rest of the body arrives
            return $"{outcome}, then {await Outcome(buffers.ReadBodyAsync().AsTask())}";
        }));

        var body = new SlowBody(1024, 4096, received, release.Task);
        using var content = new StreamContent(body);
        using HttpResponseMessage response = await app.Client.PostAsync("/", content);

        Assert.Equal("OperationCanceledException, then OperationCanceledException", await response.Content.ReadAsStringAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released its chunks");

        static async Task<string> Outcome(Task<ReadOnlyMemory<byte>> reading)
        {
            try
            {
                return $"read {(await reading).Length}";
            }
            catch (Exception error)
            {
                return error is OperationCanceledException ? nameof(OperationCanceledException) : error.GetType().Name;
            }
        }
    }

    // A read canceled before it starts takes nothing: a later read returns the whole body.
    [Fact]
    public async Task A_read_canceled_before_it_starts_leaves_the_body_to_a_later_read()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            using var cancelled = new CancellationTokenSource();
            await cancelled.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await buffers.ReadBodyAsync(cancelled.Token));
            return (await buffers.ReadBodyAsync()).Length;
        }));

        using HttpResponseMessage response = await app.Client.PostAsync("/", new ByteArrayContent(new byte[3000]));
        Assert.Equal("3000", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_cancelled_read_throws_OperationCanceledException()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            using var cancelled = new CancellationTokenSource();
            await cancelled.CancelAsync();
            try
            {
                await buffers.ReadBodyAsync(cancelled.Token);
                return "read";
            }
            catch (OperationCanceledException)
            {
                return "cancelled";
            }
        }));

        using HttpResponseMessage response = await app.Client.PostAsync("/", new ByteArrayContent(new byte[100]));
        Assert.Equal("cancelled", await response.Content.ReadAsStringAsync());
    }

    // A body that sends its first part, signals, waits, then sends the rest.
    private sealed class SlowBody(int first, int total, TaskCompletionSource sent, Task resume) : Stream
    {
        private int _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => total;

        public override long Position { get => _position; set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_position == first)
            {
                sent.TrySetResult();
                await resume;
            }

            int limit = _position < first ? first : total;
            int count = Math.Min(buffer.Length, limit - _position);
            buffer.Span[..count].Fill(1);
            _position += count;
            return count;
        }

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
