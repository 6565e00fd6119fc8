using System.Buffers;

namespace AllocHosting;

/// <summary>
/// An <see cref="IBufferWriter{T}"/> of bytes that grows inside the request's arena: each time
/// it runs out of room it rents a new segment (twice the previous, up to one arena chunk), so
/// nothing written is ever copied while writing. What was written is exposed as one
/// <see cref="ReadOnlySequence{T}"/> (no copy) or one contiguous <see cref="ReadOnlyMemory{T}"/>
/// (copied once into the arena when there are several segments).
/// </summary>
/// <remarks>
/// Like every request buffer it lives until the request ends and must not be used afterwards.
/// It is for one writer at a time (not thread-safe), as <see cref="IBufferWriter{T}"/> implies. Once
/// writing has ended, <see cref="WrittenMemory"/> and <see cref="WrittenSequence"/> may be read from
/// several threads at once; they return the same contiguous copy.
/// </remarks>
public sealed class RequestBufferWriter : IBufferWriter<byte>
{
    private readonly RequestArena _arena;
    private readonly int _lease;

    // Filled segments (each written to its length; created with the second segment, so a writer that stays
    // in one segment allocates nothing more), then the current one with _currentWritten bytes.
    private List<Memory<byte>>? _segments;
    private Memory<byte> _current;
    private int _currentWritten;
    private long _writtenBefore;
    private int _nextSegmentSize = RequestBufferSegment.FirstSize;

    // The contiguous copy of several segments (WrittenMemory), valid while _joinState is Joined. A body the
    // arena keeps is read by several tasks at once, so the first join claims the state with one
    // compare-exchange and publishes the copy; a join that loses waits for it and returns the same memory
    // (its own rent is merely lost to the request). Writing resets the state (one writer, no reader then).
    private ReadOnlyMemory<byte> _joined;
    private int _joinState;
    private const int NotJoined = 0;
    private const int Joining = 1;
    private const int Joined = 2;

    internal RequestBufferWriter(RequestArena arena, int lease)
    {
        _arena = arena;
        _lease = lease;
    }

    /// <summary>The lease of the request this writer writes for.</summary>
    internal int Lease => _lease;

    private int SegmentCount => _segments?.Count ?? 0;

    /// <summary>Bytes written so far.</summary>
    public long WrittenCount => _writtenBefore + _currentWritten;

    /// <summary>What was written, as a sequence over the writer's segments (no copy).</summary>
    public ReadOnlySequence<byte> WrittenSequence
    {
        get
        {
            if (_segments is not { Count: > 0 } segments)
            {
                return new ReadOnlySequence<byte>(_current[.._currentWritten]);
            }

            var first = new RequestBufferSegment(segments[0], 0);
            RequestBufferSegment last = first;
            for (int i = 1; i < segments.Count; i++)
            {
                last = last.Append(segments[i]);
            }

            if (_currentWritten > 0)
            {
                last = last.Append(_current[.._currentWritten]);
            }

            return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        }
    }

    /// <summary>What was written, contiguous: the single segment itself, or a copy into one arena rent when the writer grew into several.</summary>
    /// <exception cref="InvalidOperationException">More than <see cref="int.MaxValue"/> bytes were written, or the request ended.</exception>
    public ReadOnlyMemory<byte> WrittenMemory
    {
        get
        {
            if (SegmentCount == 0)
            {
                return _current[.._currentWritten];
            }

            if (Volatile.Read(ref _joinState) == Joined)
            {
                return _joined;
            }

            long total = WrittenCount;
            if (total > int.MaxValue)
            {
                throw new InvalidOperationException($"{total} bytes were written: too many for one contiguous memory; use {nameof(WrittenSequence)}.");
            }

            return Join(_arena.Rent((int)total, _lease));
        }
    }

    /// <inheritdoc />
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or beyond what the last <see cref="GetMemory"/> returned.</exception>
    public void Advance(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _current.Length - _currentWritten);
        _currentWritten += count;
        _joinState = NotJoined;
    }

    /// <inheritdoc />
    /// <exception cref="InvalidOperationException">The request ended.</exception>
    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sizeHint);
        int wanted = Math.Max(sizeHint, 1);
        if (_current.Length - _currentWritten < wanted)
        {
            Grow(wanted);
        }

        return _current[_currentWritten..];
    }

    /// <inheritdoc />
    /// <exception cref="InvalidOperationException">The request ended.</exception>
    public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;

    /// <summary>
    /// Uses an announced length (a <c>Content-Length</c>) as a hint for the first segment, before the first byte
    /// arrives: room for <paramref name="announced"/> bytes, at most one arena chunk, so an honest announcement of up
    /// to a chunk lands in one segment and a lying one makes the request hold at most a chunk ahead of what it
    /// received. Does nothing once a segment exists, or for an announcement of zero or less.
    /// </summary>
    internal void ReserveAnnounced(long announced)
    {
        if (announced > 0 && _current.IsEmpty && SegmentCount == 0)
        {
            GetMemory((int)Math.Min(announced, _arena.ChunkCapacityHint));
        }
    }

    /// <summary>As <see cref="GetMemory"/>, but a growth that finds the budget spent waits for memory (policy Wait) without blocking, for the async APIs.</summary>
    /// <exception cref="InvalidOperationException">The request ended.</exception>
    internal ValueTask<Memory<byte>> GetMemoryAsync(int sizeHint, CancellationToken cancellationToken)
    {
        int wanted = Math.Max(sizeHint, 1);
        return _current.Length - _currentWritten >= wanted ? new(_current[_currentWritten..]) : GrowAsync(wanted, cancellationToken);
    }

    /// <summary>As <see cref="ReserveAnnounced"/>, waiting as <see cref="GetMemoryAsync"/> does (completed at once when the rent needs no wait).</summary>
    internal ValueTask ReserveAnnouncedAsync(long announced, CancellationToken cancellationToken)
    {
        if (announced <= 0 || !_current.IsEmpty || SegmentCount > 0)
        {
            return default;
        }

        ValueTask<Memory<byte>> growing = GetMemoryAsync((int)Math.Min(announced, _arena.ChunkCapacityHint), cancellationToken);
        if (growing.IsCompletedSuccessfully)
        {
            _ = growing.Result;
            return default;
        }

        return new ValueTask(growing.AsTask());
    }

    /// <summary>
    /// Copies <paramref name="source"/> whole into the room the current segment has left, without renting; false,
    /// writing nothing, when it does not fit (the caller then grows with <see cref="GetMemoryAsync"/>).
    /// </summary>
    internal bool TryWriteWithoutGrowth(in ReadOnlySequence<byte> source)
    {
        if (source.Length > _current.Length - _currentWritten)
        {
            return false;
        }

        source.CopyTo(_current.Span[_currentWritten..]);
        _currentWritten += (int)source.Length;
        _joinState = NotJoined;
        return true;
    }

    /// <summary>As <see cref="WrittenMemory"/>, but the join's rent waits as <see cref="GetMemoryAsync"/> does (completed at once for one segment, or a join whose rent needs no wait).</summary>
    /// <exception cref="InvalidOperationException">More than <see cref="int.MaxValue"/> bytes were written, or the request ended.</exception>
    internal ValueTask<ReadOnlyMemory<byte>> GetWrittenMemoryAsync(CancellationToken cancellationToken)
    {
        if (SegmentCount == 0 || Volatile.Read(ref _joinState) == Joined || WrittenCount > int.MaxValue)
        {
            return new(WrittenMemory);
        }

        // Rented before the copy that WrittenMemory makes into it.
        ValueTask<Memory<byte>> renting = _arena.RentAsync((int)WrittenCount, _lease, cancellationToken);
        return renting.IsCompletedSuccessfully ? new(Join(renting.Result)) : JoinAwaitedAsync(renting);
    }

    private async ValueTask<ReadOnlyMemory<byte>> JoinAwaitedAsync(ValueTask<Memory<byte>> renting) =>
        Join(await renting.ConfigureAwait(false));

    private ReadOnlyMemory<byte> Join(Memory<byte> copy)
    {
        var wait = default(SpinWait);
        while (true)
        {
            int state = Interlocked.CompareExchange(ref _joinState, Joining, NotJoined);
            if (state == NotJoined)
            {
                try
                {
                    WrittenSequence.CopyTo(copy.Span);
                }
                catch
                {
                    // (The request ended: its memory throws.) A read waiting for this join tries its own.
                    Volatile.Write(ref _joinState, NotJoined);
                    throw;
                }

                _joined = copy;
                Volatile.Write(ref _joinState, Joined);
                return copy;
            }

            if (state == Joined)
            {
                return _joined;
            }

            // Another read of the same body is joining it: its copy, once published, is the one.
            wait.SpinOnce();
        }
    }

    private ValueTask<Memory<byte>> GrowAsync(int wanted, CancellationToken cancellationToken)
    {
        ValueTask<Memory<byte>> renting = _arena.RentAsync(Math.Max(wanted, _nextSegmentSize), _lease, cancellationToken);
        if (renting.IsCompletedSuccessfully)
        {
            Use(renting.Result);
            return new(_current);
        }

        return GrowAwaitedAsync(renting);
    }

    private async ValueTask<Memory<byte>> GrowAwaitedAsync(ValueTask<Memory<byte>> renting)
    {
        Use(await renting.ConfigureAwait(false));
        return _current;
    }

    private void Grow(int wanted) =>
        Use(_arena.Rent(Math.Max(wanted, _nextSegmentSize), _lease));

    // Rent first, then use: a refused rent (arena full, budget spent, request ended) leaves the writer as it was.
    private void Use(Memory<byte> next)
    {
        if (_currentWritten > 0)
        {
            (_segments ??= []).Add(_current[.._currentWritten]);
            _writtenBefore += _currentWritten;
        }

        _current = next;
        _currentWritten = 0;
        _nextSegmentSize = RequestBufferSegment.NextSize(_nextSegmentSize, _arena.ChunkCapacityHint);
    }
}
