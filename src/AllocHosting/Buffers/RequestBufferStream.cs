using System.Buffers;
using System.Diagnostics.CodeAnalysis;

namespace AllocHosting;

/// <summary>
/// A seekable, readable and writable <see cref="Stream"/> over request memory: the request-scoped
/// counterpart of <see cref="MemoryStream"/>. Create it with <see cref="IRequestBuffers.CreateStream"/>.
/// </summary>
/// <remarks>
/// <para>
/// Memory: the stream rents segments from the request's arena as it grows, the first of 4 KiB, each
/// next one twice the previous up to one arena chunk (64 KiB by default), then chunk-sized ones, so
/// nothing written is ever moved. A stream of N bytes holds about N rounded up to its last segment
/// (at most one chunk, or 2·N for small streams) plus a small list of segments; writes allocate
/// nothing on the GC heap. Shrinking with <see cref="SetLength"/> keeps the memory; growing (by
/// <see cref="SetLength"/> or by writing past the end after a seek) exposes zeros, as
/// <see cref="MemoryStream"/> does.
/// </para>
/// <para>
/// Lifetime: <see cref="Stream.Dispose()"/> is cheap and returns nothing (the memory goes back when
/// the request ends). After <see cref="Stream.Dispose()"/>, and after the request it was created in
/// ended, every member throws <see cref="ObjectDisposedException"/> (except <c>Dispose</c>, and
/// <see cref="CanRead"/>, <see cref="CanWrite"/>, <see cref="CanSeek"/>, which report <see langword="false"/>
/// as the <see cref="Stream"/> contract requires); a stream that outlived its request never touches
/// the memory of a later request.
/// </para>
/// <para>
/// Threading: one reader or writer at a time (not thread-safe), as with <see cref="MemoryStream"/>.
/// The asynchronous reads and flushes complete synchronously; an asynchronous write completes
/// synchronously unless it must grow the stream while the budget is spent: it then waits for memory
/// (policy Wait) without blocking a thread, where a synchronous write is refused at once.
/// </para>
/// <code>
/// app.MapGet("/report.gz", async (HttpResponse response, IRequestBuffers buffers) =>
/// {
///     using RequestBufferStream stream = buffers.CreateStream();
///     await using (var gzip = new GZipStream(stream, CompressionLevel.Fastest, leaveOpen: true))
///     {
///         await gzip.WriteAsync("report"u8.ToArray());
///     }
///
///     response.ContentLength = stream.Length;
///     await stream.WriteToAsync(response.Body);
/// });
/// </code>
/// </remarks>
public sealed partial class RequestBufferStream : Stream
{
    private readonly RequestArena _arena;
    private readonly int _lease;

    // The segments as rented (each at its full length) and where each starts in the stream.
    private readonly List<Memory<byte>> _segments = [];
    private readonly List<long> _starts = [];

    // The segment the last position lookup found (see SegmentOf).
    private int _cursor;
    private long _capacity;
    private long _length;
    private long _position;
    private int _nextSegmentSize = RequestBufferSegment.FirstSize;
    private bool _disposed;

    // The last completed Task<int> handed out by the array ReadAsync, reused while the count repeats.
    private Task<int>? _lastReadTask;

    internal RequestBufferStream(RequestArena arena, int lease)
    {
        _arena = arena;
        _lease = lease;
    }

    /// <summary><see langword="true"/> until the stream is disposed or its request ended.</summary>
    public override bool CanRead => IsUsable;

    /// <summary><see langword="true"/> until the stream is disposed or its request ended.</summary>
    public override bool CanSeek => IsUsable;

    /// <summary><see langword="true"/> until the stream is disposed or its request ended.</summary>
    public override bool CanWrite => IsUsable;

    /// <summary>Bytes in the stream.</summary>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override long Length
    {
        get
        {
            ThrowIfUnusable();
            return _length;
        }
    }

    /// <summary>Where the next read or write happens; it may be set beyond <see cref="Length"/> (a write there zero-fills the gap).</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value set is negative.</exception>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override long Position
    {
        get
        {
            ThrowIfUnusable();
            return _position;
        }

        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ThrowIfUnusable();
            _position = value;
        }
    }

    private bool IsUsable => !_disposed && _arena.Lease == _lease;

    /// <summary>Does nothing: the bytes are already in request memory.</summary>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override void Flush() => ThrowIfUnusable();

    /// <summary>Completes at once: the bytes are already in request memory.</summary>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override Task FlushAsync(CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled(cancellationToken);
        }

        ThrowIfUnusable();
        return Task.CompletedTask;
    }

    /// <summary>Moves <see cref="Position"/>.</summary>
    /// <returns>The new position.</returns>
    /// <exception cref="IOException">The new position would be negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="origin"/> is not a <see cref="SeekOrigin"/>.</exception>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override long Seek(long offset, SeekOrigin origin)
    {
        ThrowIfUnusable();
        long basis = origin switch
        {
            SeekOrigin.Begin => 0,
            SeekOrigin.Current => _position,
            SeekOrigin.End => _length,
            _ => throw new ArgumentException($"Unknown seek origin {origin}.", nameof(origin)),
        };
        long target = basis + offset;
        if (target < 0 || (offset > 0 && target < basis))
        {
            throw new IOException("An attempt was made to move the position before the beginning of the stream.");
        }

        _position = target;
        return target;
    }

    /// <summary>Sets <see cref="Length"/>: growing exposes zeros (renting as needed), shrinking keeps the memory; <see cref="Position"/> moves back to the new end if it was beyond.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="value"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override void SetLength(long value)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(value);
        ThrowIfUnusable();
        if (value > _length)
        {
            EnsureCapacity(value);
            Clear(_length, value);
        }

        _length = value;
        _position = Math.Min(_position, value);
    }

    /// <summary>Reads up to <c>buffer.Length</c> bytes from <see cref="Position"/>.</summary>
    /// <returns>Bytes read, zero at the end.</returns>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override int Read(Span<byte> buffer)
    {
        ThrowIfUnusable();
        long available = _length - _position;
        if (available <= 0 || buffer.IsEmpty)
        {
            return 0;
        }

        int count = (int)Math.Min(buffer.Length, available);
        CopyOut(_position, buffer[..count]);
        _position += count;
        return count;
    }

    /// <inheritdoc cref="Read(Span{byte})" />
    /// <exception cref="ArgumentNullException"><paramref name="buffer"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> and <paramref name="count"/> are outside <paramref name="buffer"/>.</exception>
    public override int Read(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        return Read(buffer.AsSpan(offset, count));
    }

    /// <summary>Reads one byte.</summary>
    /// <returns>The byte, or -1 at the end.</returns>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override int ReadByte()
    {
        ThrowIfUnusable();
        if (_position >= _length)
        {
            return -1;
        }

        int index = SegmentOf(_position);
        byte value = _segments[index].Span[(int)(_position - _starts[index])];
        _position++;
        return value;
    }

    /// <summary>Reads as <see cref="Read(Span{byte})"/> does, completing synchronously without allocating.</summary>
    /// <returns>Bytes read; a faulted or canceled task on error or cancellation.</returns>
    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<int>(cancellationToken);
        }

        try
        {
            return new ValueTask<int>(Read(buffer.Span));
        }
        catch (Exception e)
        {
            return ValueTask.FromException<int>(e);
        }
    }

    /// <summary>Reads as <see cref="Read(byte[], int, int)"/> does, completing synchronously; the completed task is reused while the count repeats.</summary>
    /// <returns>Bytes read; a faulted or canceled task on error or cancellation.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="buffer"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> and <paramref name="count"/> are outside <paramref name="buffer"/>.</exception>
    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        ValidateBufferArguments(buffer, offset, count);
        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled<int>(cancellationToken);
        }

        try
        {
            int read = Read(buffer.AsSpan(offset, count));
            Task<int>? last = _lastReadTask;
            return last is not null && last.Result == read ? last : _lastReadTask = Task.FromResult(read);
        }
        catch (Exception e)
        {
            return Task.FromException<int>(e);
        }
    }

    /// <summary>Writes <paramref name="buffer"/> at <see cref="Position"/>, growing the stream (a gap after <see cref="Length"/> becomes zeros).</summary>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    /// <exception cref="InsufficientMemoryException">The request's arena is full and the overflow policy is <see cref="ArenaOverflowPolicy.Fail"/>.</exception>
    public override void Write(ReadOnlySpan<byte> buffer)
    {
        ThrowIfUnusable();
        if (buffer.IsEmpty)
        {
            return;
        }

        long end = _position + buffer.Length;
        EnsureCapacity(end);
        if (_position > _length)
        {
            Clear(_length, _position);
        }

        CopyIn(_position, buffer);
        _position = end;
        _length = Math.Max(_length, end);
    }

    /// <inheritdoc cref="Write(ReadOnlySpan{byte})" />
    /// <exception cref="ArgumentNullException"><paramref name="buffer"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> and <paramref name="count"/> are outside <paramref name="buffer"/>.</exception>
    public override void Write(byte[] buffer, int offset, int count)
    {
        ValidateBufferArguments(buffer, offset, count);
        Write(new ReadOnlySpan<byte>(buffer, offset, count));
    }

    /// <summary>Writes one byte at <see cref="Position"/>.</summary>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override void WriteByte(byte value)
    {
        ThrowIfUnusable();
        EnsureCapacity(_position + 1);
        if (_position > _length)
        {
            Clear(_length, _position);
        }

        int index = SegmentOf(_position);
        _segments[index].Span[(int)(_position - _starts[index])] = value;
        _position++;
        _length = Math.Max(_length, _position);
    }

    /// <summary>
    /// Writes as <see cref="Write(ReadOnlySpan{byte})"/> does, completing synchronously without allocating while the stream
    /// has room or memory is to be had at once; a growth that finds the budget spent waits for memory (policy Wait)
    /// without blocking, as <see cref="IRequestBuffers.RentAsync"/> does.
    /// </summary>
    /// <returns>A task that completes when the bytes are written; a faulted or canceled one on error or cancellation.</returns>
    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        try
        {
            ThrowIfUnusable();
            if (!buffer.IsEmpty && _capacity < _position + buffer.Length)
            {
                return WriteGrowingAsync(buffer, cancellationToken);
            }

            Write(buffer.Span);
            return ValueTask.CompletedTask;
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Writes as <see cref="WriteAsync(ReadOnlyMemory{byte}, CancellationToken)"/> does.</summary>
    /// <returns>A completed task; a faulted or canceled one on error or cancellation.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="buffer"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> and <paramref name="count"/> are outside <paramref name="buffer"/>.</exception>
    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        ValidateBufferArguments(buffer, offset, count);
        return WriteAsync(new ReadOnlyMemory<byte>(buffer, offset, count), cancellationToken).AsTask();
    }

    /// <summary>Writes the bytes from <see cref="Position"/> to the end straight from the stream's segments into <paramref name="destination"/> (no intermediate buffer), then moves <see cref="Position"/> to the end.</summary>
    /// <param name="destination">Where to write.</param>
    /// <param name="bufferSize">Ignored beyond validation: the segments are written as they are.</param>
    /// <exception cref="ArgumentNullException"><paramref name="destination"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bufferSize"/> is not positive.</exception>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public override void CopyTo(Stream destination, int bufferSize)
    {
        ValidateCopyToArguments(destination, bufferSize);
        ThrowIfUnusable();
        for (long at = _position; at < _length;)
        {
            ReadOnlyMemory<byte> piece = PieceAt(at);
            destination.Write(piece.Span);
            at += piece.Length;
            ThrowIfUnusable();
        }

        _position = Math.Max(_position, _length);
    }

    /// <summary>Writes as <see cref="CopyTo(Stream, int)"/> does, awaiting each segment's write to <paramref name="destination"/>.</summary>
    /// <inheritdoc cref="CopyTo(Stream, int)" />
    public override async Task CopyToAsync(Stream destination, int bufferSize, CancellationToken cancellationToken)
    {
        ValidateCopyToArguments(destination, bufferSize);
        ThrowIfUnusable();
        for (long at = _position; at < _length;)
        {
            ReadOnlyMemory<byte> piece = PieceAt(at);
            await destination.WriteAsync(piece, cancellationToken).ConfigureAwait(false);
            at += piece.Length;
            ThrowIfUnusable();
        }

        _position = Math.Max(_position, _length);
    }

    /// <summary>Writes the whole content (from 0 to <see cref="Length"/>, whatever <see cref="Position"/> is) to <paramref name="destination"/>, segment by segment; <see cref="Position"/> does not move.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="destination"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public void WriteTo(Stream destination)
    {
        ArgumentNullException.ThrowIfNull(destination);
        ThrowIfUnusable();
        for (long at = 0; at < _length;)
        {
            ReadOnlyMemory<byte> piece = PieceAt(at);
            destination.Write(piece.Span);
            at += piece.Length;
            ThrowIfUnusable();
        }
    }

    /// <summary>Writes as <see cref="WriteTo"/> does, awaiting each segment's write.</summary>
    /// <returns>A task that completes when everything was written.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="destination"/> is null.</exception>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public async Task WriteToAsync(Stream destination, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(destination);
        ThrowIfUnusable();
        for (long at = 0; at < _length;)
        {
            ReadOnlyMemory<byte> piece = PieceAt(at);
            await destination.WriteAsync(piece, cancellationToken).ConfigureAwait(false);
            at += piece.Length;
            ThrowIfUnusable();
        }
    }

    /// <summary>The whole content (0 to <see cref="Length"/>) as a sequence over the stream's segments (no copy), valid until the stream is written again or the request ends.</summary>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public ReadOnlySequence<byte> GetReadOnlySequence()
    {
        ThrowIfUnusable();
        if (_length <= (_segments.Count == 0 ? 0 : _segments[0].Length))
        {
            return _segments.Count == 0 ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(_segments[0][..(int)_length]);
        }

        var first = new RequestBufferSegment(PieceAt(0), 0);
        RequestBufferSegment last = first;
        for (long at = first.Memory.Length; at < _length;)
        {
            last = last.Append(PieceAt(at));
            at += last.Memory.Length;
        }

        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    /// <summary>Gets the whole content as one memory when it lies in one segment (always when it fits the first 4 KiB segment, or is empty).</summary>
    /// <param name="buffer">The content (no copy), or empty when this returns <see langword="false"/>.</param>
    /// <returns>Whether the content is one contiguous segment.</returns>
    /// <exception cref="ObjectDisposedException">The stream was disposed or its request ended.</exception>
    public bool TryGetBuffer(out ReadOnlyMemory<byte> buffer)
    {
        ThrowIfUnusable();
        if (_length == 0)
        {
            buffer = ReadOnlyMemory<byte>.Empty;
            return true;
        }

        if (_length <= _segments[0].Length)
        {
            buffer = _segments[0][..(int)_length];
            return true;
        }

        buffer = default;
        return false;
    }

    /// <summary>Marks the stream disposed (its memory goes back when the request ends); calling it again, or after the request ended, does nothing.</summary>
    protected override void Dispose(bool disposing)
    {
        _disposed = true;
        base.Dispose(disposing);
    }

    // The stream's bytes from 'at' to the end of its segment or of the content, whichever is first.
    private ReadOnlyMemory<byte> PieceAt(long at)
    {
        int index = SegmentOf(at);
        int offset = (int)(at - _starts[index]);
        int length = (int)Math.Min(_segments[index].Length - offset, _length - at);
        return _segments[index].Slice(offset, length);
    }

    // Copies the stream's bytes at 'at' into 'span', crossing segments.
    private void CopyOut(long at, Span<byte> span)
    {
        int index = SegmentOf(at);
        int offset = (int)(at - _starts[index]);
        while (!span.IsEmpty)
        {
            ReadOnlySpan<byte> segment = _segments[index].Span[offset..];
            int count = Math.Min(segment.Length, span.Length);
            segment[..count].CopyTo(span);
            span = span[count..];
            index++;
            offset = 0;
        }
    }

    // Copies 'span' into the stream at 'at', crossing segments; the caller ensured the capacity.
    private void CopyIn(long at, ReadOnlySpan<byte> span)
    {
        int index = SegmentOf(at);
        int offset = (int)(at - _starts[index]);
        while (!span.IsEmpty)
        {
            Span<byte> segment = _segments[index].Span[offset..];
            int count = Math.Min(segment.Length, span.Length);
            span[..count].CopyTo(segment);
            span = span[count..];
            index++;
            offset = 0;
        }
    }

    // Zeroes [from, to): arena memory is not necessarily clear, and a shrunk stream keeps its old bytes.
    private void Clear(long from, long to)
    {
        int index = SegmentOf(from);
        int offset = (int)(from - _starts[index]);
        while (from < to)
        {
            Span<byte> segment = _segments[index].Span[offset..];
            int count = (int)Math.Min(segment.Length, to - from);
            segment[..count].Clear();
            from += count;
            index++;
            offset = 0;
        }
    }

    // The segment that holds position 'at' (< capacity): the segment of the last lookup or the one after it
    // (sequential reads and writes), else a binary search over the starts. Segments are only ever added.
    private int SegmentOf(long at)
    {
        int index = _cursor;
        if (at >= _starts[index])
        {
            if (at - _starts[index] < _segments[index].Length)
            {
                return index;
            }

            if (index + 1 < _starts.Count && at - _starts[index + 1] < _segments[index + 1].Length)
            {
                return _cursor = index + 1;
            }
        }

        index = _starts.BinarySearch(at);
        return _cursor = index >= 0 ? index : ~index - 1;
    }

    private void ThrowIfUnusable()
    {
        if (!IsUsable)
        {
            ThrowDisposed();
        }
    }

    [DoesNotReturn]
    private void ThrowDisposed() =>
        throw new ObjectDisposedException(
            nameof(RequestBufferStream),
            _disposed
                ? "The request buffer stream was disposed."
                : "The request buffer stream was used after its request ended: its memory went back to the arena; never keep a request stream beyond the request.");
}
