using System.Buffers;

namespace AllocHosting.Samples.WebApi;

/// <summary>
/// <c>POST /webhook</c>: a signed JSON event of unknown length, read whole, its HMAC-SHA256 checked against
/// <c>X-Signature</c> (401 on a mismatch), parsed, and answered with a small JSON summary. Four variants that
/// answer the same bytes and differ only in where the body lives: request memory (<c>/webhook</c>), a
/// <see cref="MemoryStream"/> (<c>/webhook/memorystream</c>), a hand-grown <see cref="ArrayPool{T}"/> buffer
/// (<c>/webhook/arraypool</c>) and a <c>RecyclableMemoryStream</c> (<c>/webhook/recyclable</c>).
/// </summary>
internal static class WebhookEndpoints
{
    // The ArrayPool variant's first buffer; it doubles (rent larger, copy, return) as the body arrives.
    private const int FirstArraySize = 16 * 1024;

    /// <summary>Maps the four /webhook routes.</summary>
    public static IEndpointRouteBuilder MapWebhookEndpoints(this IEndpointRouteBuilder routes)
    {
        routes.MapPost("/webhook", RequestMemoryAsync);
        routes.MapPost("/webhook/memorystream", MemoryStreamAsync);
        routes.MapPost("/webhook/arraypool", ArrayPoolAsync);
        routes.MapPost("/webhook/recyclable", RecyclableAsync);
        return routes;
    }

    // The body read into request memory as it arrives (contiguous), released when the request ends;
    // the summary is serialised into request memory too.
    private static async Task<IResult> RequestMemoryAsync(HttpRequest request, IRequestBuffers buffers, CancellationToken aborted)
    {
        ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync(aborted);
        WebhookSummary? summary = WebhookPayload.Process(new ReadOnlySequence<byte>(body), WebhookPayload.SignatureOf(request), out IResult? error);
        return summary is null ? error! : RequestBufferResults.Json(summary, WebhookJsonContext.Default.WebhookSummary);
    }

    // What most code does today: copy into a MemoryStream, take an array.
    private static async Task<IResult> MemoryStreamAsync(HttpRequest request, CancellationToken aborted)
    {
        using var stream = new MemoryStream();
        await request.Body.CopyToAsync(stream, aborted);
        byte[] body = stream.ToArray();
        WebhookSummary? summary = WebhookPayload.Process(new ReadOnlySequence<byte>(body), WebhookPayload.SignatureOf(request), out IResult? error);
        return summary is null ? error! : Results.Json(summary, WebhookJsonContext.Default.WebhookSummary);
    }

    // A careful hand-written read loop on ArrayPool<byte>.Shared: grow by renting a larger array and
    // copying, stop past the limit, return every array cleared (the body is a signed payload).
    private static async Task<IResult> ArrayPoolAsync(HttpRequest request, CancellationToken aborted)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(FirstArraySize);
        try
        {
            int length = 0;
            while (true)
            {
                if (length == buffer.Length)
                {
                    if (length > WebhookPayload.MaxBodyBytes)
                    {
                        return WebhookPayload.TooLarge();
                    }

                    byte[] larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                    buffer.AsSpan(0, length).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
                    buffer = larger;
                }

                int read = await request.Body.ReadAsync(buffer.AsMemory(length), aborted);
                if (read == 0)
                {
                    break;
                }

                length += read;
            }

            WebhookSummary? summary = WebhookPayload.Process(new ReadOnlySequence<byte>(buffer, 0, length), WebhookPayload.SignatureOf(request), out IResult? error);
            return summary is null ? error! : Results.Json(summary, WebhookJsonContext.Default.WebhookSummary);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
        }
    }

    // Microsoft.IO.RecyclableMemoryStream from the one shared manager; the body is read as its block sequence.
    private static async Task<IResult> RecyclableAsync(HttpRequest request, CancellationToken aborted)
    {
        using var stream = RecyclableStreams.Manager.GetStream("webhook");
        await request.Body.CopyToAsync(stream, aborted);
        WebhookSummary? summary = WebhookPayload.Process(stream.GetReadOnlySequence(), WebhookPayload.SignatureOf(request), out IResult? error);
        return summary is null ? error! : Results.Json(summary, WebhookJsonContext.Default.WebhookSummary);
    }
}
