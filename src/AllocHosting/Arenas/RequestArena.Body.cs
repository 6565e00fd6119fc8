using System.Buffers;
using System.Runtime.ExceptionServices;
using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// The request body read into the arena (<see cref="IRequestBuffers.ReadBodyAsync"/>,
/// <see cref="IRequestBuffers.ReadBodySequenceAsync"/>): read once per request by <see cref="RequestBodyReader"/>
/// into a <see cref="RequestBufferWriter"/> that the arena keeps for the request's later reads.
/// </summary>
/// <remarks>
/// The calls complete at once, with no asynchronous state machine, when the whole body has already arrived and
/// needs no wait for memory (a small body whose length was announced, the common case); they go on asynchronously
/// from where they stopped otherwise. Either way every failure comes in the returned task, never thrown by the call.
/// </remarks>
internal sealed partial class RequestArena
{
    // The body read by ReadBody*Async, for the request of its writer's lease (a later request reads its own):
    // one reference, so a lock-free reader never pairs one request's writer with another's lease.
    private RequestBufferWriter? _body;

    public ValueTask<ReadOnlyMemory<byte>> ReadBodyAsync(CancellationToken cancellationToken = default) => ReadBodyAsync(Volatile.Read(ref _lease), cancellationToken);

    public ValueTask<ReadOnlySequence<byte>> ReadBodySequenceAsync(CancellationToken cancellationToken = default) => ReadBodySequenceAsync(Volatile.Read(ref _lease), cancellationToken);

    /// <summary>The whole body of the request of <paramref name="lease"/>, contiguous, in request memory (read once per request).</summary>
    /// <remarks>Completes at once when the body has already arrived and needs no wait for memory (see <see cref="RequestBodyReader"/>); every failure comes in the task.</remarks>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended.</exception>
    public ValueTask<ReadOnlyMemory<byte>> ReadBodyAsync(int lease, CancellationToken cancellationToken)
    {
        try
        {
            ValueTask<RequestBufferWriter> reading = ReadBodyCoreAsync(lease, cancellationToken);
            if (!reading.IsCompletedSuccessfully)
            {
                return ReadBodyAwaitedAsync(reading, lease, cancellationToken);
            }

            RequestBufferWriter body = reading.Result;
            ThrowIfStale(lease);
            return body.GetWrittenMemoryAsync(cancellationToken);
        }
        catch (Exception error)
        {
            return FaultedAsync<ReadOnlyMemory<byte>>(error);
        }
    }

    /// <summary>The whole body of the request of <paramref name="lease"/>, as segments of request memory (read once per request).</summary>
    /// <remarks>Completes at once as <see cref="ReadBodyAsync(int, CancellationToken)"/> does; every failure comes in the task.</remarks>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended.</exception>
    public ValueTask<ReadOnlySequence<byte>> ReadBodySequenceAsync(int lease, CancellationToken cancellationToken)
    {
        try
        {
            ValueTask<RequestBufferWriter> reading = ReadBodyCoreAsync(lease, cancellationToken);
            if (!reading.IsCompletedSuccessfully)
            {
                return ReadBodySequenceAwaitedAsync(reading, lease);
            }

            RequestBufferWriter body = reading.Result;
            ThrowIfStale(lease);
            return new(body.WrittenSequence);
        }
        catch (Exception error)
        {
            return FaultedAsync<ReadOnlySequence<byte>>(error);
        }
    }

    private async ValueTask<ReadOnlyMemory<byte>> ReadBodyAwaitedAsync(ValueTask<RequestBufferWriter> reading, int lease, CancellationToken cancellationToken)
    {
        RequestBufferWriter body = await reading.ConfigureAwait(false);
        ThrowIfStale(lease);
        return await body.GetWrittenMemoryAsync(cancellationToken).ConfigureAwait(false);
    }

    private async ValueTask<ReadOnlySequence<byte>> ReadBodySequenceAwaitedAsync(ValueTask<RequestBufferWriter> reading, int lease)
    {
        RequestBufferWriter body = await reading.ConfigureAwait(false);
        ThrowIfStale(lease);
        return body.WrittenSequence;
    }

    // A failure of the synchronous part, in a task as an async method would give it (an OperationCanceledException
    // makes a canceled task).
    private static async ValueTask<T> FaultedAsync<T>(Exception error)
    {
        await Task.CompletedTask.ConfigureAwait(false);
        ExceptionDispatchInfo.Throw(error);
        return default!;
    }

    private ValueTask<RequestBufferWriter> ReadBodyCoreAsync(int lease, CancellationToken cancellationToken)
    {
        ThrowIfStale(lease);
        if (Volatile.Read(ref _body) is { } read && read.Lease == lease)
        {
            return ValueTask.FromResult(read);
        }

        HttpContext context = _context ?? throw new InvalidOperationException("The request has no HTTP context.");
        ValueTask<RequestBufferWriter> reading = RequestBodyReader.ReadAsync(context, CreateWriter(lease), cancellationToken);
        return reading.IsCompletedSuccessfully ? new(KeepBody(reading.Result, lease)) : KeepBodyAwaitedAsync(reading, lease);
    }

    private async ValueTask<RequestBufferWriter> KeepBodyAwaitedAsync(ValueTask<RequestBufferWriter> reading, int lease) =>
        KeepBody(await reading.ConfigureAwait(false), lease);

    // Keeps the body read for its request, so that a second read of the request returns it.
    private RequestBufferWriter KeepBody(RequestBufferWriter body, int lease)
    {
        lock (_chainLock)
        {
            // A read that ends after its request must not attach its writer to the pooled arena
            // (Release clears _body under the same lock).
            Engage();
            ThrowIfStale(lease);
            Volatile.Write(ref _body, body);
        }

        return body;
    }
}
