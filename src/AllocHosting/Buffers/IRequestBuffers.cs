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
    long Used { get; }

    /// <summary>Bytes of arena memory the request holds now (zero until its first rent).</summary>
    long Capacity { get; }

    /// <summary>Rents <paramref name="length"/> bytes, 16-byte aligned; their content is unspecified (zero when clearing is on).</summary>
    /// <param name="length">Bytes wanted, zero or more.</param>
    /// <returns>The memory, valid until the request ends.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="InvalidOperationException">No request arena is active (no middleware, or the request ended).</exception>
    /// <exception cref="InsufficientMemoryException">The request's arena is full and the overflow policy is <see cref="ArenaOverflowPolicy.Fail"/>.</exception>
    /// <exception cref="RequestArenaBudgetExceededException">The process-wide arena budget is spent.</exception>
    Memory<byte> Rent(int length);

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

    /// <summary>Creates a seekable, readable, writable stream over request memory (the request-scoped <see cref="MemoryStream"/>); see <see cref="RequestBufferStream"/>.</summary>
    /// <returns>An empty stream, usable until it is disposed or the request ends.</returns>
    /// <exception cref="InvalidOperationException">No request arena is active.</exception>
    RequestBufferStream CreateStream();
}
