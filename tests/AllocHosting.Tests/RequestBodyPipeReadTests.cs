using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging.Abstractions;

namespace AllocHosting.Tests;

/// <summary>
/// ReadBodyAsync and ReadBodySequenceAsync over a body pipe the test controls, outside a server: a body that has
/// already arrived is read at once, one that arrives in parts goes on asynchronously from where it stopped, and
/// every failure comes in the returned task.
/// </summary>
public sealed class RequestBodyPipeReadTests : IDisposable
{
    private readonly TestMeterFactory _meters = new();
    private readonly RequestArenaPool _pool;
    private readonly Pipe _pipe = new(new PipeOptions(pauseWriterThreshold: 0));
    private readonly DefaultHttpContext _context = new();

    public RequestBodyPipeReadTests()
    {
        var options = new SwitchableAllocatorOptions { MemoryBudget = 16 * 64 * 1024, ReuseDelay = TimeSpan.Zero };
        _pool = new RequestArenaPool(
            Microsoft.Extensions.Options.Options.Create(options),
            new ArenaChunkSource(options, AllocHosting.Allocators.MemorySources.NativeMemorySource.Shared),
            new AllocHostingMetrics(_meters, new AllocHosting.Allocators.SwitchableAllocator()),
            NullLogger<RequestArenaPool>.Instance,
            TimeProvider.System);
        _context.Features.Set<IRequestBodyPipeFeature>(new BodyPipe(_pipe.Reader));
    }

    public void Dispose()
    {
        _pool.Dispose();
        _meters.Dispose();
    }

    [Theory]
    [InlineData(0, true)]
    [InlineData(1, true)]
    [InlineData(8 * 1024, true)]
    [InlineData(64 * 1024, true)]
    [InlineData(8 * 1024, false)]
    public async Task A_body_that_has_arrived_is_read_at_once_and_whole(int length, bool announced)
    {
        byte[] body = TestBytes.Pattern(length, 7);
        await _pipe.Writer.WriteAsync(body);
        await _pipe.Writer.CompleteAsync();
        _context.Request.ContentLength = announced ? length : null;
        RequestArena arena = _pool.RentArena(_context);

        ValueTask<ReadOnlyMemory<byte>> reading = arena.ReadBodyAsync(arena.Lease, CancellationToken.None);

        // An announced body that fits its first segment needs nothing to wait for; an unannounced one grows
        // through the asynchronous loop, which also completes without waiting here.
        Assert.True(reading.IsCompleted);
        Assert.Equal(body, (await reading).ToArray());
        Assert.Equal(body, (await arena.ReadBodySequenceAsync(arena.Lease, CancellationToken.None)).ToArray());
        _pool.ReturnArena(arena, _context);
    }

    [Fact]
    public async Task A_body_that_arrives_in_parts_goes_on_from_where_the_first_part_stopped()
    {
        byte[] body = TestBytes.Pattern(100_000, 11);
        _context.Request.ContentLength = body.Length;
        await _pipe.Writer.WriteAsync(body.AsMemory(0, 5000));
        RequestArena arena = _pool.RentArena(_context);

        ValueTask<ReadOnlySequence<byte>> reading = arena.ReadBodySequenceAsync(arena.Lease, CancellationToken.None);
        Assert.False(reading.IsCompleted);

        await _pipe.Writer.WriteAsync(body.AsMemory(5000, 70_000));
        await _pipe.Writer.WriteAsync(body.AsMemory(75_000));
        await _pipe.Writer.CompleteAsync();

        Assert.Equal(body, (await reading).ToArray());
        Assert.Equal(body, (await arena.ReadBodyAsync(arena.Lease, CancellationToken.None)).ToArray());
        _pool.ReturnArena(arena, _context);
        Assert.Equal(0, _pool.ChunksInUse);
    }

    [Fact]
    public async Task A_part_larger_than_the_room_held_is_read_again_by_the_loop_not_lost()
    {
        // Announced 1000 bytes but 9000 arrive at once: the first segment is too small, so the read that found
        // them is given back unconsumed and the loop grows the writer for all of them.
        byte[] body = TestBytes.Pattern(9000, 13);
        _context.Request.ContentLength = 1000;
        await _pipe.Writer.WriteAsync(body);
        await _pipe.Writer.CompleteAsync();
        RequestArena arena = _pool.RentArena(_context);

        ReadOnlyMemory<byte> read = await arena.ReadBodyAsync(arena.Lease, CancellationToken.None);

        Assert.Equal(body, read.ToArray());
        _pool.ReturnArena(arena, _context);
    }

    [Fact]
    public void Failures_come_in_the_task_not_from_the_call()
    {
        _context.Features.Set<IHttpMaxRequestBodySizeFeature>(new TestBodySizeLimit { MaxRequestBodySize = 100 });
        _context.Request.ContentLength = 101;
        RequestArena arena = _pool.RentArena(_context);
        int lease = arena.Lease;

        ValueTask<ReadOnlyMemory<byte>> tooLarge = arena.ReadBodyAsync(lease, CancellationToken.None);
        Assert.True(tooLarge.IsFaulted);
        Assert.Equal(StatusCodes.Status413PayloadTooLarge, Assert.Throws<BadHttpRequestException>(() => tooLarge.GetAwaiter().GetResult()).StatusCode);

        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.True(arena.ReadBodySequenceAsync(lease, cancelled.Token).AsTask().IsCanceled);

        _pool.ReturnArena(arena, _context);
        ValueTask<ReadOnlyMemory<byte>> stale = arena.ReadBodyAsync(lease, CancellationToken.None);
        Assert.True(stale.IsFaulted);
        Assert.Throws<InvalidOperationException>(() => stale.GetAwaiter().GetResult());
    }

    [Fact]
    public async Task A_body_beyond_the_limit_that_arrived_unannounced_is_refused_in_the_task_and_consumed()
    {
        _context.Features.Set<IHttpMaxRequestBodySizeFeature>(new TestBodySizeLimit { MaxRequestBodySize = 1000 });
        await _pipe.Writer.WriteAsync(new byte[1001]);
        await _pipe.Writer.CompleteAsync();
        RequestArena arena = _pool.RentArena(_context);

        ValueTask<ReadOnlyMemory<byte>> reading = arena.ReadBodyAsync(arena.Lease, CancellationToken.None);

        BadHttpRequestException refused = await Assert.ThrowsAsync<BadHttpRequestException>(() => reading.AsTask());
        Assert.Equal(StatusCodes.Status413PayloadTooLarge, refused.StatusCode);

        // The refused read consumed the body: a later read of the request is refused the same way, not served the rest.
        Assert.Same(refused, await Assert.ThrowsAsync<BadHttpRequestException>(() => arena.ReadBodySequenceAsync(arena.Lease, CancellationToken.None).AsTask()));
        _pool.ReturnArena(arena, _context);
        Assert.Equal(0, _pool.ChunksInUse);
    }

    // Two reads of one request at once: the second waits for the first, and both return the same bytes, in the
    // same memory, once the body has arrived.
    [Fact]
    public async Task A_read_that_starts_while_another_reads_waits_and_gets_the_same_body()
    {
        byte[] body = TestBytes.Pattern(20_000, 3);
        await _pipe.Writer.WriteAsync(body.AsMemory(0, 5_000));
        RequestArena arena = _pool.RentArena(_context);

        Task<ReadOnlyMemory<byte>> first = arena.ReadBodyAsync(arena.Lease, CancellationToken.None).AsTask();
        Task<ReadOnlyMemory<byte>> second = arena.ReadBodyAsync(arena.Lease, CancellationToken.None).AsTask();
        Assert.False(first.IsCompleted);
        Assert.False(second.IsCompleted);
        await _pipe.Writer.WriteAsync(body.AsMemory(5_000));
        await _pipe.Writer.CompleteAsync();

        ReadOnlyMemory<byte>[] reads = await Task.WhenAll(first, second);
        Assert.Equal(body, reads[0].ToArray());
        Assert.True(reads[0].Span == reads[1].Span, "both reads return the one body read");
        _pool.ReturnArena(arena, _context);
    }

    // Reads of a body that has been taken already, on two threads at once: the first join of its segments
    // publishes the one contiguous copy, and the other read returns that copy (before, each joined its
    // own, and the two reads of one body returned different memory).
    [Fact]
    public async Task Reads_of_a_taken_body_on_two_threads_at_once_return_the_same_memory()
    {
        byte[] body = TestBytes.Pattern(20_000, 5);
        for (int round = 0; round < 200; round++)
        {
            var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 0));
            await pipe.Writer.WriteAsync(body);
            await pipe.Writer.CompleteAsync();
            var context = new DefaultHttpContext();
            context.Features.Set<IRequestBodyPipeFeature>(new BodyPipe(pipe.Reader));
            RequestArena arena = _pool.RentArena(context);
            int lease = arena.Lease;
            Assert.False((await arena.ReadBodySequenceAsync(lease, CancellationToken.None)).IsSingleSegment);

            using var start = new Barrier(2);
            Task<ReadOnlyMemory<byte>> ReadAtOnce() => Task.Factory.StartNew(
                () =>
                {
                    start.SignalAndWait();
                    return arena.ReadBodyAsync(lease, CancellationToken.None).AsTask().GetAwaiter().GetResult();
                },
                CancellationToken.None,
                TaskCreationOptions.LongRunning,
                TaskScheduler.Default);

            ReadOnlyMemory<byte>[] reads = await Task.WhenAll(ReadAtOnce(), ReadAtOnce());
            Assert.True(reads[0].Span == reads[1].Span, $"round {round}: the two reads returned different memory");
            Assert.Equal(body, reads[0].ToArray());
            _pool.ReturnArena(arena, context);
        }
    }

    // The request ends while one read takes the body and another waits for it, and the arena serves its next
    // request at once: the waiting read fails as any use after the end does, the taking read fails when it
    // finishes (during the next request, whose body it must not become), and the next request reads its own body.
    [Fact]
    public async Task Reads_still_at_work_when_the_request_ends_fail_and_leave_nothing_to_the_next_request()
    {
        var next = new Pipe(new PipeOptions(pauseWriterThreshold: 0));
        byte[] nextBody = TestBytes.Pattern(3_000, 8);
        await next.Writer.WriteAsync(nextBody);
        await next.Writer.CompleteAsync();
        var nextContext = new DefaultHttpContext();
        nextContext.Features.Set<IRequestBodyPipeFeature>(new BodyPipe(next.Reader));
        await _pipe.Writer.WriteAsync(new byte[5_000]);
        RequestArena arena = _pool.RentArena(_context);
        Task<ReadOnlyMemory<byte>> taking = arena.ReadBodyAsync(arena.Lease, CancellationToken.None).AsTask();
        Task<ReadOnlyMemory<byte>> waiting = arena.ReadBodyAsync(arena.Lease, CancellationToken.None).AsTask();

        // No await between the two: the released arena is this thread's spare, and serves the next request.
        _pool.ReturnArena(arena, _context);
        RequestArena again = _pool.RentArena(nextContext);
        Assert.Same(arena, again);

        await Assert.ThrowsAsync<InvalidOperationException>(() => waiting.WaitAsync(TimeSpan.FromSeconds(10)));
        await _pipe.Writer.CompleteAsync();
        await Assert.ThrowsAsync<InvalidOperationException>(() => taking.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(nextBody, (await again.ReadBodyAsync(again.Lease, CancellationToken.None)).ToArray());
        _pool.ReturnArena(again, nextContext);
        Assert.Equal(0, _pool.ChunksInUse);
    }

    private sealed class BodyPipe(PipeReader reader) : IRequestBodyPipeFeature
    {
        public PipeReader Reader => reader;
    }
}
