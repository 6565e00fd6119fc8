using System.Buffers;
using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// A response body that is already in request memory (or anywhere else), sent with its exact
/// <c>Content-Length</c>: made by <see cref="RequestBufferResults.Bytes(ReadOnlyMemory{byte}, string?, int?)"/>
/// and its overloads, and by <see cref="RequestBufferResults.Stream(RequestBufferStream, string?, int?)"/>.
/// </summary>
/// <remarks>
/// The bytes go straight from where they are to the server's response pipe (<see cref="HttpResponse.BodyWriter"/>);
/// nothing is copied to the GC heap. The memory must stay valid until the result has run, which
/// request memory does: it lives until the request ends.
/// </remarks>
public sealed class RequestBufferBytesResult : IResult, IStatusCodeHttpResult, IContentTypeHttpResult
{
    private const string DefaultContentType = "application/octet-stream";

    private readonly ReadOnlySequence<byte> _body;

    internal RequestBufferBytesResult(ReadOnlySequence<byte> body, string? contentType, int? statusCode)
    {
        _body = body;
        ContentType = contentType ?? DefaultContentType;
        StatusCode = statusCode;
    }

    /// <summary>The body's length in bytes: the response's <c>Content-Length</c>.</summary>
    public long Length => _body.Length;

    /// <summary>The response's content type (<c>application/octet-stream</c> unless given).</summary>
    public string ContentType { get; }

    /// <summary>The response's status code (200 unless given).</summary>
    public int? StatusCode { get; }

    /// <summary>Writes the status, the headers and the body.</summary>
    /// <param name="httpContext">The request's context.</param>
    public Task ExecuteAsync(HttpContext httpContext)
    {
        ArgumentNullException.ThrowIfNull(httpContext);
        return Send(httpContext.Response, _body, ContentType, StatusCode ?? StatusCodes.Status200OK, httpContext.RequestAborted);
    }

    // The one way a result of this library sends a body it holds: status, exact length, the
    // segments written to the response pipe, one flush.
    internal static async Task Send(HttpResponse response, ReadOnlySequence<byte> body, string contentType, int statusCode, CancellationToken cancellationToken)
    {
        response.StatusCode = statusCode;
        response.ContentType = contentType;
        response.ContentLength = body.Length;
        if (body.IsEmpty)
        {
            return;
        }

        foreach (ReadOnlyMemory<byte> segment in body)
        {
            response.BodyWriter.Write(segment.Span);
        }

        await response.BodyWriter.FlushAsync(cancellationToken);
    }
}
