using System.Runtime.CompilerServices;
using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// The synchronous rent of the arena: the lock-free fast path from the current chunk, the second
/// half of its lease check, and the slow rent under <see cref="_chainLock"/> that chains chunks.
/// </summary>
internal sealed partial class RequestArena
{
    /// <summary>
    /// Rents <paramref name="length"/> bytes, 16-byte aligned, for the request of <paramref name="lease"/>.
    /// The fast path: a bump in the calling thread's rent window for this request, with plain loads
    /// and stores (no locked instruction); a miss refills the window (see <see cref="RentRefillSlow"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Memory<byte> Rent(int length, int lease)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ThrowIfStale(lease);

        // The window serves only the request it was reserved for (this arena, this lease): a window
        // left from another request, or from an earlier request of this pooled arena, misses.
        RequestRentWindow? window = RequestRentWindow.CurrentOrNull;
        if (window is not null && ReferenceEquals(window.Arena, this) && window.Lease == lease)
        {
            // Limit is 16-byte aligned, so start <= Limit; a rent of 0 bytes misses (length - 1 wraps).
            int start = (window.Cursor + (ByteAlignment - 1)) & ~(ByteAlignment - 1);
            if ((uint)(length - 1) < (uint)(window.Limit - start))
            {
                window.Cursor = start + length;
                window.Rents++;

                // Checked again after the rent: a release that began meanwhile may have handed the
                // chunk on (see RentedUnderLease).
                return RentedUnderLease(window.Whole.Slice(start, length), lease);
            }
        }

        return RentRefillSlow(length, lease);
    }

    /// <summary>Rents room for <paramref name="count"/> values of <typeparamref name="T"/> for the request of <paramref name="lease"/>. The fast path, as for bytes.</summary>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended.</exception>
    public Memory<T> Rent<T>(int count, int lease)
        where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ThrowIfStale(lease);
        ArenaChunk? chunk = Volatile.Read(ref _current);
        if (chunk is not null && chunk.TryRent(count, in _lease, lease, out Memory<T> memory))
        {
            return RentedUnderLease(memory, lease);
        }

        return RentSlow<T, ValueRent<T>>(count, lease);
    }

    // The second half of the lease check of a lock-free rent. The first (before the rent) refuses a
    // late renter whose request has visibly ended; this one a renter that raced with the release:
    // Release advances the lease before it retires and resets the chunks, and the rent carved either
    // from a window its thread reserved in this request's use (keyed by the lease) or with an
    // interlocked operation on the chunk, so a rent that still reads the lease unchanged afterwards
    // carved from its own request's use of the chunk. One that reads it changed may have carved from memory
    // the chunk now serves (or will serve) another request: it is refused, and the bytes it took
    // are merely lost to that use. The rented memory itself was sliced from the manager read before
    // the carve, so it is the ended use's (and throws) in any case.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Memory<T> RentedUnderLease<T>(Memory<T> memory, int lease)
    {
        if (lease != Volatile.Read(ref _lease))
        {
            ThrowNotActive();
        }

        return memory;
    }

    // The one slow rent of both shapes, after the current chunk could not serve the rent, under the
    // lock. A rent that fits a pool chunk: the chunk another task may have chained meanwhile, the
    // next pool chunk within the per-request maximum, room left in the last large chunk, then
    // (past the maximum) the overflow policy and another pool chunk. A larger rent: room left in the
    // last large chunk, else a large chunk of its class (past the maximum, after the overflow policy).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Memory<T> RentSlow<T, TShape>(int count, int lease)
        where TShape : struct, IRentShape<T>
    {
        long bytes = TShape.BytesOf(count);
        using (EngageAndLock())
        {
            ThrowIfStale(lease);
            bool small = bytes <= _pool.ChunkCapacity;
            Memory<T> memory;
            if (small && !HoldsMemory && TShape.TryRent(ChainFirst(bytes), count, out memory))
            {
                return memory;
            }

            if (!HoldsMemory)
            {
                ResolveProfile();
            }

            if (small)
            {
                // Another task may have chained a chunk while this one waited for the lock.
                if (_current is { } current && TShape.TryRent(current, count, out memory))
                {
                    return memory;
                }

                if (WithinMaximum(_pool.ChunkSize) && TShape.TryRent(Chain(), count, out memory))
                {
                    return memory;
                }
            }

            if (_large is [.., var last] && TShape.TryRent(last, count, out memory))
            {
                return memory;
            }

            ArenaChunk chunk;
            if (small)
            {
                _pool.ApplyOverflowPolicy(bytes, _profile);
                chunk = Chain();
            }
            else
            {
                long size = _pool.LargeChunkSizeFor(bytes);
                if (!WithinMaximum(size))
                {
                    _pool.ApplyOverflowPolicy(bytes, _profile);
                }

                chunk = TakeLarge(bytes);
            }

            // A chunk fresh from the pool has lost bytes to a late renter of its previous use only in
            // the one case the carves' lease guard cannot see (see ArenaChunk's remarks on guards: the
            // late carve read the offset before the release, and the next use moved it to exactly
            // that value), or to a caller that rents from the chunk without the guard. A rent sized
            // to the chunk then takes one more (kept by the request, released with it).
            if (TShape.TryRent(chunk, count, out memory) || TShape.TryRent(small ? Chain() : TakeLarge(bytes), count, out memory))
            {
                return memory;
            }

            throw new InvalidOperationException($"Two fresh chunks of {chunk.Capacity} bytes refused a rent of {bytes} bytes they were sized for.");
        }
    }

    // What differs between renting bytes and renting values: how a chunk serves the rent and how
    // many bytes it needs (which decides between a pool chunk and a large chunk).
    private interface IRentShape<T>
    {
        static abstract long BytesOf(int count);

        static abstract bool TryRent(ArenaChunk chunk, int count, out Memory<T> memory);
    }

    // Bytes, 16-byte aligned.
    private readonly struct ByteRent : IRentShape<byte>
    {
        public static long BytesOf(int count) => count;

        public static bool TryRent(ArenaChunk chunk, int count, out Memory<byte> memory) => chunk.TryRent(count, ByteAlignment, out memory);
    }

    // Values of T, aligned for T: room for one more value covers the alignment.
    private readonly struct ValueRent<T> : IRentShape<T>
        where T : unmanaged
    {
        public static long BytesOf(int count)
        {
            long bytes = ((long)count * Unsafe.SizeOf<T>()) + Unsafe.SizeOf<T>();
            if (bytes > int.MaxValue)
            {
                throw new ArgumentOutOfRangeException(nameof(count), count, $"{count} values of {Unsafe.SizeOf<T>()} bytes exceed {int.MaxValue} bytes.");
            }

            return bytes;
        }

        public static bool TryRent(ArenaChunk chunk, int count, out Memory<T> memory) => chunk.TryRent(count, out memory);
    }
}
