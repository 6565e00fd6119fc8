using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// The asynchronous rent of the arena (<see cref="IRequestBuffers.RentAsync"/>, and the growth of the
/// async APIs): as <see cref="Rent(int, int)"/>, but when the next chunk is not to be had at once, it
/// awaits one in the budget's queue (policy Wait) instead of refusing the request.
/// </summary>
/// <remarks>
/// Threads: as the synchronous rent; the wait itself holds no lock and no thread. The chunk a wait
/// brings is joined to the chain under <see cref="_chainLock"/>, after the lease is checked again: a
/// request that ended meanwhile gives it straight back. The request's <c>RequestAborted</c>, when the
/// arena serves an HTTP request, cancels a wait as the caller's token does; the arena does not need an
/// HTTP context for the rest.
/// </remarks>
internal sealed partial class RequestArena
{
    public ValueTask<Memory<byte>> RentAsync(int length, CancellationToken cancellationToken = default) =>
        RentAsync(length, Volatile.Read(ref _lease), cancellationToken);

    /// <summary>Rents <paramref name="length"/> bytes, 16-byte aligned, for the request of <paramref name="lease"/>, waiting asynchronously for memory when the budget is spent (policy Wait).</summary>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended.</exception>
    /// <exception cref="RequestArenaBudgetExceededException">The budget is spent and the wait was refused (policy Reject, queue full, timeout).</exception>
    /// <exception cref="OperationCanceledException">The token, or the request's abort, canceled the wait.</exception>
    public ValueTask<Memory<byte>> RentAsync(int length, int lease, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ThrowIfStale(lease);
        ArenaChunk? chunk = Volatile.Read(ref _current);
        if (chunk is not null && chunk.TryRent(length, ByteAlignment, in _lease, lease, out Memory<byte> memory))
        {
            // Checked again after the lock-free rent, as Rent does (see RentedUnderLease).
            return new(RentedUnderLease(memory, lease));
        }

        // Completed at once when a chunk is to be had without waiting; every failure comes in the task.
        ValueTask<ArenaChunk?> taking;
        bool large;
        try
        {
            using (EngageAndLock())
            {
                if (TryRentRound(length, lease, null, false, cancellationToken, out memory, out taking, out large))
                {
                    return new(memory);
                }
            }
        }
        catch (Exception error)
        {
            return FaultedAsync<Memory<byte>>(error);
        }

        return RentWaitingAsync(length, lease, taking, large, cancellationToken);
    }

    // The rent once it waits for a chunk: each round either rents or brings a new chunk, so it ends.
    private async ValueTask<Memory<byte>> RentWaitingAsync(int length, int lease, ValueTask<ArenaChunk?> taking, bool large, CancellationToken cancellationToken)
    {
        while (true)
        {
            // No lock and no thread held while waiting; a refusal is applied only if the request still runs.
            ArenaChunk? received = await taking.ConfigureAwait(false);
            using (EngageAndLock())
            {
                if (received is null)
                {
                    ThrowIfStale(lease);
                    _pool.Refuse(this);
                }

                if (TryRentRound(length, lease, received, large, cancellationToken, out Memory<byte> memory, out taking, out large))
                {
                    return memory;
                }
            }
        }
    }

    // Under _chainLock, taken with EngageAndLock: one round of the rent of bytes that may wait. It first joins the chunk the last round
    // received (or gives it back when the request has ended), then rents from the chunks the request holds (the
    // current pool chunk, then the last large chunk), else from the chunk it needs (a pool chunk while the rent
    // fits one and the request is within its maximum, else after the overflow policy; a large chunk of its class
    // for a larger rent) when one is to be had at once. False when that chunk must be awaited: taking is its wait.
    private bool TryRentRound(int length, int lease, ArenaChunk? received, bool receivedLarge, CancellationToken cancellationToken, out Memory<byte> memory, out ValueTask<ArenaChunk?> taking, out bool takingLarge)
    {
        if (received is not null && !IsLease(lease))
        {
            GiveBack(received, receivedLarge);
        }
        else if (received is not null)
        {
            Join(received, receivedLarge);
        }

        ThrowIfStale(lease);
        taking = default;
        takingLarge = false;
        if (TryRentHeld(length, out memory))
        {
            return true;
        }

        // The request's first chunk: its endpoint's settings apply from here on (maximum, overflow policy, a
        // disabled arena, the first chunk's size), as for a synchronous rent.
        if (!HoldsMemory)
        {
            ResolveProfile();
            if (length <= _pool.ChunkCapacity && TryChainFirstLarge(length) is { } first && first.TryRent(length, ByteAlignment, out memory))
            {
                return true;
            }
        }

        long largeSize = length <= _pool.ChunkCapacity ? 0 : _pool.LargeChunkSizeFor(length);
        if (!WithinMaximum(largeSize == 0 ? _pool.ChunkSize : largeSize))
        {
            _pool.ApplyOverflowPolicy(length, _profile);
        }

        takingLarge = largeSize != 0;
        for (int refusedFresh = 0; _pool.TryTakeChunkNow(this, largeSize) is { } now;)
        {
            Join(now, takingLarge);
            if (TryRentHeld(length, out memory))
            {
                return true;
            }

            // A late carve of the chunk's previous use took some of it, as the guard can miss (see RentSlow): once, another chunk.
            if (++refusedFresh > 1)
            {
                throw new InvalidOperationException($"Two fresh chunks refused a rent of {length} bytes they were sized for.");
            }
        }

        // RequestAborted is read only now: reading it makes Kestrel create its token source, whose
        // cancellation at an abort then runs later on the thread pool.
        CancellationToken aborted = _context?.RequestAborted ?? default;
        taking = _pool.TakeChunkAsync(this, largeSize, cancellationToken, aborted);
        return false;
    }

    // Under _chainLock: a rent from the chunks the request holds, taking no new one.
    private bool TryRentHeld(int length, out Memory<byte> memory)
    {
        memory = default;
        return (_current is { } current && current.TryRent(length, ByteAlignment, out memory))
            || (_large is [.., var last] && last.TryRent(length, ByteAlignment, out memory));
    }

    // Under _chainLock: adds a chunk the pool gave to this request's chain, as Chain and TakeLarge do.
    private void Join(ArenaChunk chunk, bool large)
    {
        chunk.Tracker = _tracker;   // diagnostics (null when Off), before the chunk is published
        NoteHoldsMemory();
        if (large)
        {
            (_large ??= []).Add(chunk);
            _largeBytes += chunk.Capacity;
        }
        else
        {
            _chunks.Add(chunk);
            Volatile.Write(ref _current, chunk);
        }
    }

    // Under _chainLock: a chunk that arrived after its request ended (nothing was rented from it) goes back.
    private void GiveBack(ArenaChunk chunk, bool large) => _pool.ReturnUnused(chunk, large, Slot);

    private bool IsLease(int lease) => (lease & 1) != 0 && lease == Volatile.Read(ref _lease);
}
