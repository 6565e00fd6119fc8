using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace AllocHosting;

/// <summary>
/// Results that answer from request memory with an exact <c>Content-Length</c>, for minimal APIs
/// (return them from a handler) and anywhere an <see cref="Microsoft.AspNetCore.Http.IResult"/> runs.
/// </summary>
/// <example>
/// <code>
/// app.MapGet("/report", (IRequestBuffers buffers) =>
/// {
///     RequestBufferWriter body = buffers.CreateWriter();
///     WriteReport(body);                                     // any IBufferWriter&lt;byte&gt; code
///     return RequestBufferResults.Bytes(body, "text/csv");   // Content-Length: body.WrittenCount
/// });
/// app.MapGet("/archive", async (IRequestBuffers buffers) =>
/// {
///     using RequestBufferStream zip = buffers.CreateStream();
///     await WriteArchiveAsync(zip);                          // any Stream code
///     return RequestBufferResults.Stream(zip, "application/zip");
/// });
/// app.MapGet("/summary", () => RequestBufferResults.Json(new Summary(3, 4), AppJson.Default.Summary));
/// </code>
/// </example>
public static class RequestBufferResults
{
    /// <summary>Answers with <paramref name="body"/> (request memory or any other), with its exact length.</summary>
    /// <param name="body">The body; it must stay valid until the response is sent (request memory does).</param>
    /// <param name="contentType">The content type; <c>application/octet-stream</c> when null.</param>
    /// <param name="statusCode">The status; 200 when null.</param>
    public static RequestBufferBytesResult Bytes(ReadOnlyMemory<byte> body, string? contentType = null, int? statusCode = null) =>
        new(new ReadOnlySequence<byte>(body), contentType, statusCode);

    /// <summary>Answers with <paramref name="body"/>, segment by segment, with its exact length.</summary>
    /// <param name="body">The body; it must stay valid until the response is sent.</param>
    /// <param name="contentType">The content type; <c>application/octet-stream</c> when null.</param>
    /// <param name="statusCode">The status; 200 when null.</param>
    public static RequestBufferBytesResult Bytes(ReadOnlySequence<byte> body, string? contentType = null, int? statusCode = null) =>
        new(body, contentType, statusCode);

    /// <summary>Answers with what <paramref name="writer"/> holds now (its segments, no join), with its exact length.</summary>
    /// <param name="writer">The writer; write nothing more to it after this.</param>
    /// <param name="contentType">The content type; <c>application/octet-stream</c> when null.</param>
    /// <param name="statusCode">The status; 200 when null.</param>
    /// <exception cref="ArgumentNullException"><paramref name="writer"/> is null.</exception>
    public static RequestBufferBytesResult Bytes(RequestBufferWriter writer, string? contentType = null, int? statusCode = null)
    {
        ArgumentNullException.ThrowIfNull(writer);
        return new(writer.WrittenSequence, contentType, statusCode);
    }

    /// <summary>
    /// Answers with the whole content of <paramref name="stream"/> (from 0 to its <see cref="RequestBufferStream.Length"/>,
    /// whatever its <see cref="RequestBufferStream.Position"/> is, as <see cref="RequestBufferStream.WriteTo"/> and
    /// <c>MemoryStream.ToArray</c> do), segment by segment with no copy, with its exact length.
    /// </summary>
    /// <remarks>
    /// The content is taken as it is now (<see cref="RequestBufferStream.GetReadOnlySequence"/>): write nothing more to the
    /// stream after this. The stream may be disposed before the result runs (a <c>using</c> in the handler): its memory is
    /// the request's and lives until the request ends.
    /// </remarks>
    /// <param name="stream">The stream, created by <see cref="IRequestBuffers.CreateStream"/> in this request.</param>
    /// <param name="contentType">The content type; <c>application/octet-stream</c> when null.</param>
    /// <param name="statusCode">The status; 200 when null.</param>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="stream"/> was already disposed, or its request ended.</exception>
    public static RequestBufferBytesResult Stream(RequestBufferStream stream, string? contentType = null, int? statusCode = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return new(stream.GetReadOnlySequence(), contentType, statusCode);
    }

    /// <summary>Answers with <paramref name="value"/> as JSON, serialised into request memory, with its exact length.</summary>
    /// <typeparam name="T">The value's type.</typeparam>
    /// <param name="value">The value.</param>
    /// <param name="typeInfo">How to serialise it (from a source-generated <c>JsonSerializerContext</c>: trimming- and AOT-safe).</param>
    /// <param name="contentType">The content type; <c>application/json; charset=utf-8</c> when null.</param>
    /// <param name="statusCode">The status; 200 when null.</param>
    /// <exception cref="ArgumentNullException"><paramref name="typeInfo"/> is null.</exception>
    public static RequestBufferJsonResult<T> Json<T>(T value, JsonTypeInfo<T> typeInfo, string? contentType = null, int? statusCode = null)
    {
        ArgumentNullException.ThrowIfNull(typeInfo);
        return new(value, typeInfo, contentType, statusCode);
    }

    /// <summary>Answers with <paramref name="value"/> as JSON by reflection-based serialisation with <paramref name="options"/>.</summary>
    /// <typeparam name="T">The value's type.</typeparam>
    /// <param name="value">The value.</param>
    /// <param name="options">The serialiser options; <see cref="JsonSerializerOptions.Web"/> when null.</param>
    /// <param name="contentType">The content type; <c>application/json; charset=utf-8</c> when null.</param>
    /// <param name="statusCode">The status; 200 when null.</param>
    [RequiresUnreferencedCode("Reflection-based JSON serialisation may need members that trimming removes: use the JsonTypeInfo<T> overload.")]
    [RequiresDynamicCode("Reflection-based JSON serialisation may need code generated at run time: use the JsonTypeInfo<T> overload.")]
    public static RequestBufferJsonResult<T> Json<T>(T value, JsonSerializerOptions? options = null, string? contentType = null, int? statusCode = null)
    {
        JsonSerializerOptions resolved = options ?? JsonSerializerOptions.Web;
        resolved.MakeReadOnly(populateMissingResolver: true);
        return new(value, (JsonTypeInfo<T>)resolved.GetTypeInfo(typeof(T)), contentType, statusCode);
    }
}
