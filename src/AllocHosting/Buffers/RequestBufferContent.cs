using System.Buffers;
using System.Net;

namespace AllocHosting;

/// <summary>
/// An <see cref="HttpContent"/> over request memory (or any memory), for sending bytes upstream with
/// <see cref="HttpClient"/> without copying them to the GC heap: the segments are written to the connection as
/// they are, with an exact <c>Content-Length</c> (never chunked).
/// </summary>
/// <remarks>
/// <para>
/// The bytes are taken when the content is created: a <see cref="RequestBufferWriter"/> or <see cref="RequestBufferStream"/>
/// is read as it is then (write nothing more to it), and a stream may be disposed afterwards. The content can be
/// sent more than once (a redirect or a retry sends it again) and reading it (<see cref="HttpContent.ReadAsStreamAsync()"/>)
/// gives a read-only stream over the same memory.
/// </para>
/// <para>
/// Request memory lives until the request ends: send the content within the request (await the call). After the
/// request ended, sending or reading it throws <see cref="ObjectDisposedException"/>, as the memory does.
/// No content type is set: set <c>Headers.ContentType</c> as for any <see cref="HttpContent"/>.
/// </para>
/// <code>
/// RequestBufferWriter body = buffers.CreateWriter();
/// using (var json = new Utf8JsonWriter(body)) { JsonSerializer.Serialize(json, order, AppJson.Default.Order); }
/// using var content = new RequestBufferContent(body) { Headers = { ContentType = new("application/json") } };
/// using HttpResponseMessage response = await client.PostAsync("/orders", content);
/// </code>
/// </remarks>
public sealed class RequestBufferContent : HttpContent
{
    private readonly ReadOnlySequence<byte> _body;

    /// <summary>Creates content over <paramref name="body"/>.</summary>
    /// <param name="body">The bytes; they must stay valid while the content is sent (request memory does, within the request).</param>
    public RequestBufferContent(ReadOnlyMemory<byte> body)
        : this(new ReadOnlySequence<byte>(body))
    {
    }

    /// <summary>Creates content over <paramref name="body"/>, sent segment by segment.</summary>
    /// <param name="body">The bytes; they must stay valid while the content is sent.</param>
    public RequestBufferContent(ReadOnlySequence<byte> body)
    {
        _body = body;
    }

    /// <summary>Creates content over what <paramref name="writer"/> holds now (its segments, no join).</summary>
    /// <param name="writer">The writer; write nothing more to it after this.</param>
    /// <exception cref="ArgumentNullException"><paramref name="writer"/> is null.</exception>
    public RequestBufferContent(RequestBufferWriter writer)
        : this(WrittenSequenceOf(writer))
    {
    }

    /// <summary>Creates content over the whole content of <paramref name="stream"/> (0 to its length, whatever its position), its segments, no copy.</summary>
    /// <param name="stream">The stream; write nothing more to it after this (it may be disposed).</param>
    /// <exception cref="ArgumentNullException"><paramref name="stream"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="stream"/> was already disposed, or its request ended.</exception>
    public RequestBufferContent(RequestBufferStream stream)
        : this(SequenceOf(stream))
    {
    }

    /// <summary>The content's length in bytes: its <c>Content-Length</c>.</summary>
    public long Length => _body.Length;

    /// <summary>Writes the bytes to <paramref name="stream"/>, segment by segment.</summary>
    /// <param name="stream">Where the content goes (the connection).</param>
    /// <param name="context">Unused.</param>
    /// <returns>A task that completes when every segment was written.</returns>
    /// <exception cref="ObjectDisposedException">The memory was request memory and its request ended.</exception>
    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        SerializeToStreamAsync(stream, context, CancellationToken.None);

    /// <summary>Writes the bytes to <paramref name="stream"/>, segment by segment, until <paramref name="cancellationToken"/> is cancelled.</summary>
    /// <param name="stream">Where the content goes (the connection).</param>
    /// <param name="context">Unused.</param>
    /// <param name="cancellationToken">Cancels the writes.</param>
    /// <returns>A task that completes when every segment was written.</returns>
    /// <exception cref="ObjectDisposedException">The memory was request memory and its request ended.</exception>
    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stream);
        foreach (ReadOnlyMemory<byte> segment in _body)
        {
            await stream.WriteAsync(segment, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Writes the bytes to <paramref name="stream"/> synchronously (<see cref="HttpClient.Send(HttpRequestMessage)"/>).</summary>
    /// <param name="stream">Where the content goes.</param>
    /// <param name="context">Unused.</param>
    /// <param name="cancellationToken">Checked between segments.</param>
    /// <exception cref="ObjectDisposedException">The memory was request memory and its request ended.</exception>
    protected override void SerializeToStream(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(stream);
        foreach (ReadOnlyMemory<byte> segment in _body)
        {
            cancellationToken.ThrowIfCancellationRequested();
            stream.Write(segment.Span);
        }
    }

    /// <summary>A read-only stream over the bytes (no copy), for code that reads the content back.</summary>
    /// <returns>A new read-only, seekable stream at position 0.</returns>
    protected override Task<Stream> CreateContentReadStreamAsync() => Task.FromResult(CreateContentReadStream(CancellationToken.None));

    /// <summary>A read-only stream over the bytes (no copy).</summary>
    /// <param name="cancellationToken">Unused: nothing is read ahead.</param>
    /// <returns>A new read-only, seekable stream at position 0.</returns>
    protected override Stream CreateContentReadStream(CancellationToken cancellationToken) => new SequenceReadStream(_body);

    /// <summary>Gives the exact length.</summary>
    /// <param name="length">The content's length in bytes.</param>
    /// <returns>Always <see langword="true"/>.</returns>
    protected override bool TryComputeLength(out long length)
    {
        length = _body.Length;
        return true;
    }

    private static ReadOnlySequence<byte> WrittenSequenceOf(RequestBufferWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        return writer.WrittenSequence;
    }

    private static ReadOnlySequence<byte> SequenceOf(RequestBufferStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        return stream.GetReadOnlySequence();
    }

    // A read-only, seekable stream over a sequence: what reading the content back gives, without a copy.
    private sealed class SequenceReadStream(ReadOnlySequence<byte> body) : Stream
    {
        private long _position;

        public override bool CanRead => true;

        public override bool CanSeek => true;

        public override bool CanWrite => false;

        public override long Length => body.Length;

        public override long Position
        {
            get => _position;
            set
            {
                ArgumentOutOfRangeException.ThrowIfNegative(value);
                _position = value;
            }
        }

        public override int Read(Span<byte> buffer)
        {
            if (_position >= body.Length)
            {
                return 0;
            }

            ReadOnlySequence<byte> rest = body.Slice(_position);
            int count = (int)Math.Min(buffer.Length, rest.Length);
            rest.Slice(0, count).CopyTo(buffer);
            _position += count;
            return count;
        }

        public override int Read(byte[] buffer, int offset, int count)
        {
            ValidateBufferArguments(buffer, offset, count);
            return Read(buffer.AsSpan(offset, count));
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            cancellationToken.IsCancellationRequested ? ValueTask.FromCanceled<int>(cancellationToken) : new ValueTask<int>(Read(buffer.Span));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        {
            ValidateBufferArguments(buffer, offset, count);
            return ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        }

        public override long Seek(long offset, SeekOrigin origin)
        {
            long target = origin switch
            {
                SeekOrigin.Begin => offset,
                SeekOrigin.Current => _position + offset,
                SeekOrigin.End => body.Length + offset,
                _ => throw new ArgumentException($"Unknown seek origin {origin}.", nameof(origin)),
            };
            if (target < 0)
            {
                throw new IOException("An attempt was made to move the position before the beginning of the stream.");
            }

            _position = target;
            return target;
        }

        public override void Flush()
        {
        }

        public override void SetLength(long value) => throw new NotSupportedException("The content's read stream is read-only.");

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("The content's read stream is read-only.");
    }
}
