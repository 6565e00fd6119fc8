using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace AllocHosting;

/// <summary>
/// Request-scoped native buffers (resolve it from DI in a handler): memory rented here comes
/// from the request's arena and is released, all at once, when the request ends.
/// </summary>
/// <remarks>
/// <para>
/// Renting allocates nothing on the GC heap and is safe from several tasks of one request at
/// once. Never keep rented memory beyond the request: afterwards <c>Span</c> on it throws
/// <see cref="ObjectDisposedException"/>. Renting outside a request that ran through the
/// request-arena middleware throws <see cref="InvalidOperationException"/>.
/// </para>
/// <code>
/// app.MapPost("/digest", async (HttpRequest request, IRequestBuffers buffers) =>
/// {
///     Memory&lt;byte&gt; buffer = buffers.Rent(64 * 1024);
///     int read = await request.Body.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false);
///     return Convert.ToHexString(SHA256.HashData(buffer.Span[..read]));
/// });
/// </code>
/// </remarks>
public interface IRequestBuffers
{
    /// <summary>Bytes rented by the request so far (alignment padding included).</summary>
    /// <exception cref="InvalidOperationException">The request has ended (its arena may serve another request by then).</exception>
    long Used { get; }

    /// <summary>Bytes of arena memory the request holds now (zero until its first rent).</summary>
    /// <exception cref="InvalidOperationException">The request has ended.</exception>
    long Capacity { get; }

    /// <summary>Rents <paramref name="length"/> bytes, 16-byte aligned; their content is unspecified (zero when clearing is on).</summary>
    /// <param name="length">Bytes wanted, zero or more.</param>
    /// <returns>The memory, valid until the request ends.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active (no middleware, or the request ended).</exception>
    /// <exception cref="InsufficientMemoryException">The request's arena is full and the overflow policy is <see cref="ArenaOverflowPolicy.Fail"/>.</exception>
    /// <exception cref="RequestArenaBudgetExceededException">The process-wide arena budget is spent (a synchronous rent never waits, whatever the policy: see <see cref="RentAsync"/>).</exception>
    Memory<byte> Rent(int length);

    /// <summary>
    /// Rents <paramref name="length"/> bytes as <see cref="Rent(int)"/> does, but when the process-wide budget is spent and
    /// <see cref="SwitchableAllocatorOptions.BudgetPolicy"/> is <see cref="ArenaBudgetPolicy.Wait"/>, waits asynchronously (no thread
    /// blocks) for another request to give memory back instead of refusing at once.
    /// </summary>
    /// <remarks>
    /// Completes synchronously, without allocating, whenever the memory is to be had at once (the common case). A waiting rent
    /// joins a FIFO queue: waiters are served in the order they came, before any newer rent, up to
    /// <see cref="SwitchableAllocatorOptions.BudgetQueueLimit"/> waiters and for at most
    /// <see cref="SwitchableAllocatorOptions.BudgetWaitTimeout"/>; beyond either the rent is refused with
    /// <see cref="RequestArenaBudgetExceededException"/> (503 with Retry-After). The request's abort cancels the wait as
    /// <paramref name="cancellationToken"/> does; a canceled wait leaves the queue and holds nothing.
    /// </remarks>
    /// <param name="length">Bytes wanted, zero or more.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>The memory, valid until the request ends.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active (no middleware, or the request ended).</exception>
    /// <exception cref="InsufficientMemoryException">The request's arena is full and the overflow policy is <see cref="ArenaOverflowPolicy.Fail"/>, or the rent needs more than the whole budget.</exception>
    /// <exception cref="RequestArenaBudgetExceededException">The budget is spent and the rent may not wait, or waited in vain.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was canceled, or the client aborted the request, while the rent waited.</exception>
    ValueTask<Memory<byte>> RentAsync(int length, CancellationToken cancellationToken = default);

    /// <summary>Rents room for <paramref name="count"/> values of <typeparamref name="T"/>, aligned for it.</summary>
    /// <typeparam name="T">An unmanaged type.</typeparam>
    /// <param name="count">Values wanted, zero or more.</param>
    /// <returns>The memory, valid until the request ends.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or too large.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    Memory<T> Rent<T>(int count)
        where T : unmanaged;

    /// <summary>Creates a writer that grows inside the request's arena.</summary>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    RequestBufferWriter CreateWriter();

    /// <summary>
    /// The request's arena as a <see cref="System.Buffers.MemoryPool{T}"/>, for pipelines and any code
    /// that rents through a pool: <c>new Pipe(new PipeOptions(pool: buffers.AsMemoryPool()))</c>,
    /// <c>PipeReader.Create(stream, new StreamPipeReaderOptions(pool: …))</c>,
    /// <c>PipeWriter.Create(stream, new StreamPipeWriterOptions(pool: …))</c>.
    /// </summary>
    /// <remarks>
    /// One pool per request (every call in a request returns the same one). A rent of -1 gets 4 KiB.
    /// Each rent costs a rent from the arena plus one small owner object; an owner's <c>Dispose</c>
    /// is cheap and gives nothing back early: the memory returns when the request ends. After its
    /// <c>Dispose</c>, or after the request ended, an owner's <c>Memory</c> throws
    /// <see cref="ObjectDisposedException"/>. Disposing the pool does nothing.
    /// </remarks>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    System.Buffers.MemoryPool<byte> AsMemoryPool();

    /// <summary>
    /// Reads the whole request body into request memory and returns it as one contiguous block.
    /// </summary>
    /// <remarks>
    /// The body is read from <c>HttpRequest.BodyReader</c> as it arrives, into segments that double from
    /// 4 KiB up to one arena chunk, then joined once (no copy when it fits in the first segment): memory
    /// follows the bytes received, never the <c>Content-Length</c> announced. Works for chunked and HTTP/2
    /// bodies and returns empty memory for an empty body. The body is read once per request: a later call
    /// returns the same bytes without reading again, and a call made while another is reading (another task
    /// of the request) waits for that read and returns its bytes. Once a read has failed after taking part
    /// of the body (the client aborted, the limit was passed, the read was cancelled), every later call of
    /// the request fails with the same exception rather than return the rest as the body; a call cancelled
    /// before it starts takes nothing. The memory lives until the request ends.
    /// </remarks>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <exception cref="Microsoft.AspNetCore.Http.BadHttpRequestException">The body is larger than the request's maximum body size (status 413).</exception>
    /// <exception cref="OperationCanceledException">The client aborted the request, or <paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active, or the body is over 2 GiB (use <see cref="ReadBodySequenceAsync"/>).</exception>
    ValueTask<ReadOnlyMemory<byte>> ReadBodyAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Reads the whole request body into request memory and returns it as a sequence of segments (no join):
    /// for <c>Utf8JsonReader</c>, <c>IncrementalHash</c> and parsers of sequences.
    /// </summary>
    /// <remarks>As <see cref="ReadBodyAsync"/>, without the final join.</remarks>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <exception cref="Microsoft.AspNetCore.Http.BadHttpRequestException">The body is larger than the request's maximum body size (status 413).</exception>
    /// <exception cref="OperationCanceledException">The client aborted the request, or <paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    ValueTask<System.Buffers.ReadOnlySequence<byte>> ReadBodySequenceAsync(CancellationToken cancellationToken = default);

    /// <summary>Creates a seekable, readable, writable stream over request memory (the request-scoped <see cref="MemoryStream"/>); see <see cref="RequestBufferStream"/>.</summary>
    /// <returns>An empty stream, usable until it is disposed or the request ends.</returns>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    RequestBufferStream CreateStream();

    /// <summary>
    /// Reads the whole request body into request memory (<see cref="ReadBodySequenceAsync"/>) and deserialises it as
    /// one JSON value of <typeparamref name="T"/> with a <see cref="Utf8JsonReader"/> over its segments: the body is
    /// never copied to the GC heap (only the value's own objects are).
    /// </summary>
    /// <remarks>
    /// Any content type is accepted: the body is parsed as UTF-8 JSON whatever <c>Content-Type</c> says (check it
    /// first if the endpoint must refuse others with 415). The body must be exactly one JSON value (whitespace around
    /// it allowed); <c>null</c> gives <see langword="default"/>. A body that is not (empty, malformed, truncated,
    /// trailing content, a value <typeparamref name="T"/> cannot take) throws <see cref="RequestBodyJsonException"/>,
    /// which the request-arena middleware answers with 400 (a problem details response through
    /// <c>IProblemDetailsService</c> when the app registered one) unless the handler catches it. A body read before by
    /// <see cref="ReadBodyAsync"/> or <see cref="ReadBodySequenceAsync"/> is not read again.
    /// </remarks>
    /// <typeparam name="T">The value's type.</typeparam>
    /// <param name="typeInfo">How to deserialise it (from a source-generated <c>JsonSerializerContext</c>: trimming- and AOT-safe).</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The value.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="typeInfo"/> is null.</exception>
    /// <exception cref="RequestBodyJsonException">The body is not one JSON value of <typeparamref name="T"/> (status 400).</exception>
    /// <exception cref="Microsoft.AspNetCore.Http.BadHttpRequestException">The body is larger than the request's maximum body size (status 413).</exception>
    /// <exception cref="OperationCanceledException">The client aborted the request, or <paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    ValueTask<T?> ReadJsonAsync<T>(JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken = default) =>
        RequestJsonReader.ReadAsync(this, typeInfo, cancellationToken);

    /// <summary>Reads the request body as JSON, as <see cref="ReadJsonAsync{T}(JsonTypeInfo{T}, CancellationToken)"/> does, by reflection-based deserialisation with <paramref name="options"/>.</summary>
    /// <typeparam name="T">The value's type.</typeparam>
    /// <param name="options">The serialiser options; <see cref="JsonSerializerOptions.Web"/> when null.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The value.</returns>
    /// <exception cref="RequestBodyJsonException">The body is not one JSON value of <typeparamref name="T"/> (status 400).</exception>
    /// <exception cref="Microsoft.AspNetCore.Http.BadHttpRequestException">The body is larger than the request's maximum body size (status 413).</exception>
    /// <exception cref="OperationCanceledException">The client aborted the request, or <paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    [RequiresUnreferencedCode("Reflection-based JSON deserialisation may need members that trimming removes: use the JsonTypeInfo<T> overload.")]
    [RequiresDynamicCode("Reflection-based JSON deserialisation may need code generated at run time: use the JsonTypeInfo<T> overload.")]
    ValueTask<T?> ReadJsonAsync<T>(JsonSerializerOptions? options = null, CancellationToken cancellationToken = default)
    {
        JsonSerializerOptions resolved = options ?? JsonSerializerOptions.Web;
        resolved.MakeReadOnly(populateMissingResolver: true);
        return RequestJsonReader.ReadAsync(this, (JsonTypeInfo<T>)resolved.GetTypeInfo(typeof(T)), cancellationToken);
    }

    /// <summary>
    /// Reads an <see cref="HttpContent"/> (an upstream response from <see cref="HttpClient"/>) whole into request memory,
    /// contiguous, refusing more than <paramref name="maxBytes"/>.
    /// </summary>
    /// <remarks>
    /// The bytes are read as they arrive into segments that double from 4 KiB up to one arena chunk, then joined once
    /// (no join when they fit in the first segment; an announced <c>Content-Length</c> sizes that segment, up to one arena chunk).
    /// <c>Content-Length</c> is a hint: one announced above <paramref name="maxBytes"/> is refused before reading, and
    /// the bytes received are counted, chunked or not. The memory lives until the request ends; what was read before
    /// a refusal or an error stays in request memory until then too. Read the response with
    /// <see cref="HttpCompletionOption.ResponseHeadersRead"/> so that <see cref="HttpClient"/> does not buffer it on the
    /// GC heap first.
    /// </remarks>
    /// <param name="content">The content, for example <c>response.Content</c>.</param>
    /// <param name="maxBytes">The most bytes accepted, 0 to <see cref="int.MaxValue"/>.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The content's bytes, valid until the request ends.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="content"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxBytes"/> is negative or above <see cref="int.MaxValue"/>.</exception>
    /// <exception cref="InvalidDataException">The content announces or holds more than <paramref name="maxBytes"/> bytes.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    /// <exception cref="IOException">The upstream connection failed mid-content (<see cref="HttpIOException"/>), as the content's stream reports it.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    ValueTask<ReadOnlyMemory<byte>> ReadContentAsync(HttpContent content, long maxBytes, CancellationToken cancellationToken = default) =>
        RequestContentReader.ReadAsync(this, content, maxBytes, cancellationToken);
}
