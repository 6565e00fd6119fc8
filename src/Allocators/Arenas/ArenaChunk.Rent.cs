using System.Numerics;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// Rents: lock-free carves of the current use (a compare-exchange on a bump chunk's offset, or the bit
/// set under its lock), each sliced from the use's memory read before the carve.
/// </summary>
/// <remarks>
/// <para>
/// Guards: an owner whose callers may still be renting when it ends the use (a request arena, whose
/// late tasks may rent after the request ended) passes a guard, a value it changes before it ends the
/// use (its lease), and the value the caller expects. A carve that finds the guard changed takes
/// nothing: without it, a late rent that reads the chunk before the use ends and carves after the
/// chunk was reset would take bytes of the chunk's next use (lost to that use, and counted as live
/// while the chunk waits in a pool). A bump carve reads the guard after the offset and before its
/// compare-exchange, so it can still take bytes of the next use in one case only: it read both before
/// the reset, and the next use moved the offset to exactly the value it read before the exchange ran.
/// The memory of a late rent is the ended use's in any case (every use of it throws).
/// </para>
/// </remarks>
public sealed unsafe partial class ArenaChunk
{
    /// <summary>Rents <paramref name="length"/> bytes aligned to <paramref name="alignment"/>; safe from several threads at once.</summary>
    /// <param name="length">Bytes wanted (zero gives an empty memory).</param>
    /// <param name="alignment">The alignment of the first byte, a power of two.</param>
    /// <param name="memory">The rented memory, valid until <see cref="Release"/>; empty when the chunk is full.</param>
    /// <returns><see langword="false"/> when the chunk has no room for the request.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two.</exception>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    /// <remarks>The fast path of every byte rent: a bump (or, for a bit-set chunk, a locked bit-set search) and a slice of the use's one <see cref="Memory{T}"/>.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryRent(int length, int alignment, out Memory<byte> memory) =>
        TryRent(length, alignment, in BumpAllocator.Unguarded, 0, out memory);

    /// <summary>
    /// Rents like <see cref="TryRent(int, int, out Memory{byte})"/> for an owner whose callers may still
    /// be renting when it ends the use (see the type's remarks on guards): fails, taking nothing, when
    /// <paramref name="useGuard"/> is no longer <paramref name="expectedGuard"/>.
    /// </summary>
    /// <param name="length">Bytes wanted (zero gives an empty memory).</param>
    /// <param name="alignment">The alignment of the first byte, a power of two.</param>
    /// <param name="useGuard">A value the owner changes before it ends the use (<see cref="Retire"/>, <see cref="Release"/>), such as its lease.</param>
    /// <param name="expectedGuard">The value of <paramref name="useGuard"/> in the use the caller rents for.</param>
    /// <param name="memory">The rented memory, valid until <see cref="Release"/>; empty when the rent fails.</param>
    /// <returns><see langword="false"/> when the chunk has no room for the request, or the guard changed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two.</exception>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryRent(int length, int alignment, ref readonly int useGuard, int expectedGuard, out Memory<byte> memory)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);

        // A tracked use (diagnostics) rents elsewhere: the untracked path is unchanged but for this check.
        ArenaRentTracker? tracker = _tracker;
        if (tracker is not null)
        {
            return TryRentTrackedSlow(length, alignment, in useGuard, expectedGuard, out memory);
        }

        return TryRentUntracked(length, alignment, in useGuard, expectedGuard, out memory);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryRentUntracked(int length, int alignment, ref readonly int useGuard, int expectedGuard, out Memory<byte> memory)
    {
        // The use's memory is read before the carve: if the use ends in between, the slice is of
        // the retired manager (every use throws) rather than of the next use's.
        Memory<byte> whole = _memory;
        if (TryCarve((nuint)length, (nuint)alignment, in useGuard, expectedGuard, out byte* pointer))
        {
            memory = length == 0 ? Memory<byte>.Empty : whole.Slice((int)(pointer - _usable), length);
            return true;
        }

        memory = default;
        return false;
    }

    /// <summary>Rents room for <paramref name="count"/> values of <typeparamref name="T"/>, aligned for <typeparamref name="T"/>; safe from several threads at once.</summary>
    /// <typeparam name="T">An unmanaged element type.</typeparam>
    /// <param name="count">Elements wanted (zero gives an empty memory).</param>
    /// <param name="memory">The rented memory, valid until <see cref="Release"/>.</param>
    /// <returns><see langword="false"/> when the chunk has no room for the request.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or its byte size exceeds <see cref="int.MaxValue"/>.</exception>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    public bool TryRent<T>(int count, out Memory<T> memory)
        where T : unmanaged => TryRent(count, in BumpAllocator.Unguarded, 0, out memory);

    /// <summary>Rents like <see cref="TryRent{T}(int, out Memory{T})"/>, guarded as <see cref="TryRent(int, int, ref readonly int, int, out Memory{byte})"/>.</summary>
    /// <typeparam name="T">An unmanaged element type.</typeparam>
    /// <param name="count">Elements wanted (zero gives an empty memory).</param>
    /// <param name="useGuard">A value the owner changes before it ends the use, such as its lease.</param>
    /// <param name="expectedGuard">The value of <paramref name="useGuard"/> in the use the caller rents for.</param>
    /// <param name="memory">The rented memory, valid until <see cref="Release"/>.</param>
    /// <returns><see langword="false"/> when the chunk has no room for the request, or the guard changed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or its byte size exceeds <see cref="int.MaxValue"/>.</exception>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    public bool TryRent<T>(int count, ref readonly int useGuard, int expectedGuard, out Memory<T> memory)
        where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        int elementSize = sizeof(T);
        long bytes = (long)count * elementSize;
        if (bytes > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, $"{count} values of {elementSize} bytes exceed {int.MaxValue} bytes.");
        }

        if (count == 0)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            memory = Memory<T>.Empty;
            return true;
        }

        // A power-of-two element size is honoured by alignment (the usable memory starts at
        // least 8-byte aligned); any other size by over-renting and rounding the offset up.
        bool powerOfTwo = BitOperations.IsPow2(elementSize);
        nuint alignment = powerOfTwo ? (nuint)Math.Max(elementSize, 8) : 8;
        nuint size = powerOfTwo ? (nuint)bytes : (nuint)bytes + (nuint)elementSize - 1;

        // The count of ended uses, then the tracker, then the manager, before the carve, as for bytes; a
        // retired manager's Memory throws.
        int use = Volatile.Read(ref _trackedUsesEnded);
        ArenaRentTracker? tracker = Volatile.Read(ref _tracker);
        ArenaChunkMemoryManager<T> manager = TypedManager<T>();
        if (!TryCarve(size, alignment, in useGuard, expectedGuard, out byte* pointer))
        {
            memory = default;
            return false;
        }

        nuint offset = (nuint)(pointer - _usable);
        int index = (int)((offset + (nuint)elementSize - 1) / (nuint)elementSize);
        memory = tracker is null
            ? manager.Memory.Slice(index, count)
            : Track(new ArenaChunkMemoryManager<T>(this, (T*)_usable + index, count, tracker, tracker.CaptureSite()), use);
        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryCarve(nuint size, nuint alignment, ref readonly int useGuard, int expectedGuard, out byte* pointer)
    {
        if (_bump is not null)
        {
            return _bump.TryAllocateConcurrentGuarded(size, alignment, in useGuard, expectedGuard, out pointer);
        }

        return TryCarveBitSet(size, alignment, in useGuard, expectedGuard, out pointer);
    }

    // Under the lock, which Retire takes to reset the bit set after the owner changed the guard: a
    // carve that still reads the expected guard here is of the use that has not ended yet.
    private bool TryCarveBitSet(nuint size, nuint alignment, ref readonly int useGuard, int expectedGuard, out byte* pointer)
    {
        using (_bitSetLock.EnterScope())
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (Volatile.Read(in useGuard) != expectedGuard)
            {
                pointer = null;
                return false;
            }

            if (!_bitSet!.TryAllocate(size, alignment, out pointer))
            {
                return false;
            }

            if (size != 0)
            {
                nuint blocks = Allocator.AlignUp(size, _bitSet.BlockSize);
                nuint end = (nuint)(pointer - _usable) + blocks;
                if (end > _bitSetHighWater)
                {
                    _bitSetHighWater = end;
                }
            }

            return true;
        }
    }

    // A byte rent of a tracked use: as TryRent, with a manager of its own carrying the rent's site.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryRentTrackedSlow(int length, int alignment, ref readonly int useGuard, int expectedGuard, out Memory<byte> memory)
    {
        // The count of ended uses first, then the tracker again: the end of a use clears the tracker
        // before it counts the use, so a rent that reads the new count sees no tracker (or the next
        // use's) and rents as that use does. Read the other way round, a rent could take a tracker of
        // the ended use with the count of the next one and keep a live manager past both.
        int use = Volatile.Read(ref _trackedUsesEnded);
        ArenaRentTracker? tracker = Volatile.Read(ref _tracker);
        if (tracker is null)
        {
            return TryRentUntracked(length, alignment, in useGuard, expectedGuard, out memory);
        }

        if (!TryCarve((nuint)length, (nuint)alignment, in useGuard, expectedGuard, out byte* pointer))
        {
            memory = default;
            return false;
        }

        memory = length == 0 ? Memory<byte>.Empty : Track(new ArenaChunkMemoryManager<byte>(this, pointer, length, tracker, tracker.CaptureSite()), use);
        return true;
    }

    // Keeps the manager of a tracked rent for retirement with its use; if that use (use: the count of
    // ended tracked uses read before the carve) ended meanwhile, retires it at once: its memory is stale.
    private Memory<T> Track<T>(ArenaChunkMemoryManager<T> manager, int use)
        where T : unmanaged
    {
        Memory<T> memory = manager.Memory;
        lock (_trackedLock)
        {
            if (_trackedUsesEnded == use)
            {
                _tracked.Add(manager);
                return memory;
            }
        }

        manager.Retire();
        return memory;
    }
}
