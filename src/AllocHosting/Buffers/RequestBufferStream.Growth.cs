namespace AllocHosting;

/// <summary>The growth of a <see cref="RequestBufferStream"/>: the segments it rents from the request's arena as it is written.</summary>
/// <remarks>
/// A synchronous write rents with <see cref="RequestArena.Rent(int, int)"/>, which never waits: when the budget is spent it
/// refuses (503). An asynchronous write rents with <see cref="RequestArena.RentAsync(int, int, CancellationToken)"/>, which
/// under the policy Wait waits for memory in the budget's queue without blocking a thread.
/// </remarks>
public sealed partial class RequestBufferStream
{
    // The write of WriteAsync that must grow: the segments are rented asynchronously first, then the write is synchronous.
    private async ValueTask WriteGrowingAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
    {
        while (_capacity < _position + buffer.Length)
        {
            Memory<byte> segment;
            try
            {
                segment = await _arena.RentAsync(_nextSegmentSize, _lease, cancellationToken).ConfigureAwait(false);
            }
            catch (InvalidOperationException) when (_arena.Lease != _lease)
            {
                ThrowDisposed();   // the request ended while the rent waited
                return;
            }

            AddSegment(segment);
        }

        Write(buffer.Span);
    }

    // Rents segments until 'needed' bytes fit: 4 KiB, doubling up to one arena chunk, then chunk-sized (as RequestBufferWriter grows).
    private void EnsureCapacity(long needed)
    {
        while (_capacity < needed)
        {
            Memory<byte> segment;
            try
            {
                segment = _arena.Rent(_nextSegmentSize, _lease);
            }
            catch (InvalidOperationException) when (_arena.Lease != _lease)
            {
                // The request ended between the check and the rent.
                ThrowDisposed();
                return;
            }

            AddSegment(segment);
        }
    }

    private void AddSegment(Memory<byte> segment)
    {
        _segments.Add(segment);
        _starts.Add(_capacity);
        _capacity += segment.Length;
        _nextSegmentSize = RequestBufferSegment.NextSize(_nextSegmentSize, _arena.ChunkCapacityHint);
    }
}
