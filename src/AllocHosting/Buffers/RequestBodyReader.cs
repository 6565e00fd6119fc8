using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.Metadata;

namespace AllocHosting;

/// <summary>
/// Reads a whole request body into request memory (<see cref="IRequestBuffers.ReadBodySequenceAsync"/>,
/// <see cref="IRequestBuffers.ReadBodyAsync"/>).
/// </summary>
/// <remarks>
/// <para>
/// The bytes are copied from <see cref="HttpRequest.BodyReader"/> into a <see cref="RequestBufferWriter"/> as they
/// arrive. <c>Content-Length</c> is a hint, never trusted: the first segment holds the announced length up to one
/// arena chunk (so a body of up to a chunk whose length is announced lands in one segment and is never copied
/// again), later segments double up to one chunk, so the memory held is at most about one chunk or twice the bytes
/// received, whatever <c>Content-Length</c> announces. A body announced larger than the request's limit is refused
/// at once, and every body is counted as it arrives. The contiguous form joins the segments once (one copy in all;
/// none when the body fits in the first segment).
/// </para>
/// <para>
/// Beyond the request's maximum body size (<see cref="IHttpMaxRequestBodySizeFeature"/>, which
/// <c>[RequestSizeLimit]</c> sets through routing; on a server without that feature, such as the test server, the
/// endpoint's <see cref="IRequestSizeLimitMetadata"/> itself) it throws <see cref="BadHttpRequestException"/> with status 413, as the
/// server's own limit does; on a client abort, <see cref="OperationCanceledException"/>. What was read stays in
/// request memory until the request ends, like every rent.
/// </para>
/// <para>
/// Memory: each segment is rented asynchronously (<see cref="RequestBufferWriter.GetMemoryAsync"/>), so when the
/// budget is spent the read waits in the budget's queue (policy Wait) without blocking a thread, and the
/// request's abort or <c>cancellationToken</c> ends the wait.
/// </para>
/// </remarks>
internal static class RequestBodyReader
{
    /// <summary>
    /// Reads the body into <paramref name="body"/>. Completes at once, with no asynchronous state at all, when the
    /// whole body has already arrived and fits the room the writer holds (the common case of a small body whose
    /// length was announced: the first segment is sized to it); otherwise it goes on asynchronously from where it
    /// stopped. Exceptions are thrown, not returned in the task (the caller folds them into its own).
    /// </summary>
    public static ValueTask<RequestBufferWriter> ReadAsync(HttpContext context, RequestBufferWriter body, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        long? limit = context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { } feature
            ? feature.MaxRequestBodySize
            : context.GetEndpoint()?.Metadata.GetMetadata<IRequestSizeLimitMetadata>()?.MaxRequestBodySize;
        long? announced = context.Request.ContentLength;
        if (limit is { } announcedLimit && announced > announcedLimit)
        {
            ThrowTooLarge(announcedLimit);
        }

        ValueTask reserving = announced is { } length ? body.ReserveAnnouncedAsync(length, cancellationToken) : default;
        if (!reserving.IsCompletedSuccessfully)
        {
            return ReadAfterReserveAsync(context, body, limit, reserving, cancellationToken);
        }

        PipeReader reader = context.Request.BodyReader;
        try
        {
            // What has arrived is taken without awaiting, while it fits the writer's room; the first read
            // that does not (or finds nothing yet) is given back unconsumed for the loop below to read again.
            while (reader.TryRead(out ReadResult read))
            {
                ReadOnlySequence<byte> buffer = read.Buffer;
                CheckLimit(reader, buffer, body, limit);
                if ((buffer.IsEmpty && !read.IsCompleted && !read.IsCanceled) || !body.TryWriteWithoutGrowth(buffer))
                {
                    reader.AdvanceTo(buffer.Start);
                    break;
                }

                if (Consumed(reader, read))
                {
                    return new(body);
                }
            }
        }
        catch (Exception error) when (IsClientAbort(context, error))
        {
            throw ClientAborted(context, error);
        }

        return ReadLoopAsync(context, body, limit, reader, cancellationToken);
    }

    private static async ValueTask<RequestBufferWriter> ReadAfterReserveAsync(HttpContext context, RequestBufferWriter body, long? limit, ValueTask reserving, CancellationToken cancellationToken)
    {
        await reserving.ConfigureAwait(false);
        return await ReadLoopAsync(context, body, limit, context.Request.BodyReader, cancellationToken).ConfigureAwait(false);
    }

    private static async ValueTask<RequestBufferWriter> ReadLoopAsync(HttpContext context, RequestBufferWriter body, long? limit, PipeReader reader, CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                ReadResult read = await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
                ReadOnlySequence<byte> buffer = read.Buffer;
                CheckLimit(reader, buffer, body, limit);
                foreach (ReadOnlyMemory<byte> segment in buffer)
                {
                    // An empty read (the end of the body) must not make the writer open a segment it will not fill.
                    for (ReadOnlyMemory<byte> rest = segment; !rest.IsEmpty;)
                    {
                        // Growth awaits memory when the budget is spent (policy Wait) instead of refusing at once.
                        Memory<byte> room = await body.GetMemoryAsync(1, cancellationToken).ConfigureAwait(false);
                        int count = Math.Min(room.Length, rest.Length);
                        rest.Span[..count].CopyTo(room.Span);
                        body.Advance(count);
                        rest = rest[count..];
                    }
                }

                if (Consumed(reader, read))
                {
                    return body;
                }
            }
        }
        catch (Exception error) when (IsClientAbort(context, error))
        {
            throw ClientAborted(context, error);
        }
    }

    private static void CheckLimit(PipeReader reader, in ReadOnlySequence<byte> buffer, RequestBufferWriter body, long? limit)
    {
        if (limit is { } max && body.WrittenCount + buffer.Length > max)
        {
            reader.AdvanceTo(buffer.End);
            ThrowTooLarge(max);
        }
    }

    // Consumes a read whose bytes were copied: true at the end of the body.
    private static bool Consumed(PipeReader reader, in ReadResult read)
    {
        reader.AdvanceTo(read.Buffer.End);
        if (read.IsCanceled)
        {
            // Someone called CancelPendingRead: what was read is not the whole body.
            throw new OperationCanceledException("The request body read was cancelled (PipeReader.CancelPendingRead) before the body ended.");
        }

        return read.IsCompleted;
    }

    // The client went away mid-body: the server's own exception (an IOException, a connection reset, or
    // Kestrel's "unexpected end of request content") says so less plainly than a cancellation.
    private static bool IsClientAbort(HttpContext context, Exception error) =>
        error is not OperationCanceledException && error is not BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } && context.RequestAborted.IsCancellationRequested;

    private static OperationCanceledException ClientAborted(HttpContext context, Exception error) =>
        new("The client aborted the request while its body was being read.", error, context.RequestAborted);

    private static void ThrowTooLarge(long limit) =>
        throw new BadHttpRequestException($"The request body is larger than the request's limit of {limit} bytes.", StatusCodes.Status413PayloadTooLarge);
}
