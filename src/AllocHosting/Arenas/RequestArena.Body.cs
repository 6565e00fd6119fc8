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

    // The lease of the request whose body a read has started to take (claimed with one compare-exchange).
    private int _bodyReading;

    // Written under _chainLock: the failure of that read, if it failed (its request's later reads fail the same way).
    private BodyFailure? _bodyFailure;

    // Under _chainLock: the reads that wait for the one taking the body (the task's state is their lease).
    private TaskCompletionSource<RequestBufferWriter>? _bodyWaiters;

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

        // A read canceled before it starts changes nothing: a later read may still take the body.
        cancellationToken.ThrowIfCancellationRequested();

        HttpContext context = _context ?? throw new InvalidOperationException("The request has no HTTP context.");

        // One read per request takes the body from the pipe (which allows one reader at a time); a read that
        // starts while it runs, or after it failed, gets its outcome.
        int claimed = Volatile.Read(ref _bodyReading);
        if (claimed == lease || Interlocked.CompareExchange(ref _bodyReading, lease, claimed) != claimed)
        {
            return WaitForBodyAsync(lease, cancellationToken);
        }

        ValueTask<RequestBufferWriter> reading;
        try
        {
            reading = RequestBodyReader.ReadAsync(context, CreateWriter(lease), cancellationToken);
        }
        catch (Exception error)
        {
            BodyReadFailed(lease, error);
            throw;
        }

        return reading.IsCompletedSuccessfully ? new(KeepBody(reading.Result, lease)) : KeepBodyAwaitedAsync(reading, lease);
    }

    private async ValueTask<RequestBufferWriter> KeepBodyAwaitedAsync(ValueTask<RequestBufferWriter> reading, int lease)
    {
        RequestBufferWriter body;
        try
        {
            body = await reading.ConfigureAwait(false);
        }
        catch (Exception error)
        {
            BodyReadFailed(lease, error);
            throw;
        }

        return KeepBody(body, lease);
    }

    // Keeps the body read for its request, so that a later read of the request returns it, and hands it to
    // the reads that waited for it.
    private RequestBufferWriter KeepBody(RequestBufferWriter body, int lease)
    {
        TaskCompletionSource<RequestBufferWriter>? waiters;
        using (EngageAndLock())
        {
            // A read that ends after its request must not attach its writer to the pooled arena
            // (Release clears _body under the same lock; its waiters were failed then).
            ThrowIfStale(lease);
            Volatile.Write(ref _body, body);
            waiters = TakeBodyWaiters(lease);
        }

        waiters?.TrySetResult(body);
        return body;
    }

    // The read that took the body failed: every read of the request fails the same way from now on (the pipe
    // may have given part of the body to the failed read, so no later read could return it whole).
    private void BodyReadFailed(int lease, Exception error)
    {
        TaskCompletionSource<RequestBufferWriter>? waiters;
        using (_chainLock.EnterScope())
        {
            if (IsLease(lease))
            {
                _bodyFailure = new BodyFailure(lease, ExceptionDispatchInfo.Capture(error));
            }

            waiters = TakeBodyWaiters(lease);
        }

        waiters?.TrySetException(error);
    }

    // A read that started while another read of the request was taking the body, or after it failed: its outcome.
    private async ValueTask<RequestBufferWriter> WaitForBodyAsync(int lease, CancellationToken cancellationToken)
    {
        TaskCompletionSource<RequestBufferWriter> waiters;
        using (EngageAndLock())
        {
            // Under the lock the reader keeps its outcome and takes the waiters with: either it is kept
            // already, or the reader will find these waiters.
            ThrowIfStale(lease);
            if (_body is { } read && read.Lease == lease)
            {
                return read;
            }

            if (_bodyFailure is { } failed && failed.Lease == lease)
            {
                failed.Error.Throw();
            }

            if (_bodyWaiters is { } existing && (int)existing.Task.AsyncState! == lease)
            {
                waiters = existing;
            }
            else
            {
                waiters = new TaskCompletionSource<RequestBufferWriter>(lease, TaskCreationOptions.RunContinuationsAsynchronously);
                _bodyWaiters = waiters;
            }
        }

        return await waiters.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    // Under _chainLock: the waiters of the read of lease, if any, taken out.
    private TaskCompletionSource<RequestBufferWriter>? TakeBodyWaiters(int lease)
    {
        TaskCompletionSource<RequestBufferWriter>? waiters = _bodyWaiters;
        if (waiters is null || (int)waiters.Task.AsyncState! != lease)
        {
            return null;
        }

        _bodyWaiters = null;
        return waiters;
    }

    // Under _chainLock, at the release: reads still waiting for the body of the ended request fail, as any
    // use of it after its end does; the ended request's outcome is forgotten.
    private void ForgetBodyRead()
    {
        _body = null;
        _bodyFailure = null;
        if (_bodyWaiters is { } waiters)
        {
            _bodyWaiters = null;
            waiters.TrySetException(new InvalidOperationException("The request ended while its body was being read."));
        }
    }

    // A failed body read, for the request of its lease.
    private sealed record BodyFailure(int Lease, ExceptionDispatchInfo Error);
}
