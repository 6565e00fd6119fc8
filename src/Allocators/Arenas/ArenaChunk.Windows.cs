using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// Rent windows: a range of the current use that one thread reserves at once and then carves on
/// its own without atomics (a request arena's per-thread windows, in the spirit of the GC's
/// allocation contexts). The chunk only reserves: the rents carved from a window are the owner's
/// to count.
/// </summary>
public sealed unsafe partial class ArenaChunk
{
    private const int WindowAlignment = 16;

    /// <summary>
    /// Whether <see cref="TryReserveWindow(int, int, out Memory{byte}, out int, out int)"/> serves the current use: an untracked use (a tracked
    /// use gives every rent a manager of its own) of a chunk whose usable memory starts 16-byte aligned.
    /// </summary>
    public bool CanReserveWindows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Volatile.Read(ref _tracker) is null && ((nuint)_usable & (WindowAlignment - 1)) == 0;
    }

    /// <summary>
    /// Reserves a window of the current use for one thread to carve on its own: between
    /// <paramref name="minimum"/> and <paramref name="preferred"/> bytes (the preferred size when
    /// it fits, else, for a bump chunk, what the chunk has left), starting 16-byte aligned. A bump
    /// chunk reserves with one compare-exchange when uncontended; a bit set chunk allocates the
    /// window's blocks under its lock. A bump chunk does not count the window as an allocation in
    /// its statistics; a bit set chunk counts it as one (its allocator's own count). Either way it
    /// counts in <see cref="Used"/> and <see cref="HighWater"/>, so ending the use clears all of
    /// it, carved or not.
    /// </summary>
    /// <param name="minimum">The fewest bytes worth reserving, at least 1.</param>
    /// <param name="preferred">The bytes wanted, at least <paramref name="minimum"/>.</param>
    /// <param name="whole">The memory of the whole usable chunk in the current use, to slice at <paramref name="offset"/>: read before the reservation, so that it is the ended use's (every use of it throws) if the use ends meanwhile.</param>
    /// <param name="offset">Where the window starts in <paramref name="whole"/>.</param>
    /// <param name="length">The bytes reserved.</param>
    /// <returns><see langword="false"/> when the chunk has no room for <paramref name="minimum"/> bytes, or <see cref="CanReserveWindows"/> is false.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="minimum"/> is below 1 or above <paramref name="preferred"/>.</exception>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    public bool TryReserveWindow(int minimum, int preferred, out Memory<byte> whole, out int offset, out int length) =>
        TryReserveWindow(minimum, preferred, in BumpAllocator.Unguarded, 0, out whole, out offset, out length);

    /// <summary>
    /// Reserves a window like <see cref="TryReserveWindow(int, int, out Memory{byte}, out int, out int)"/>,
    /// guarded as rents are (see <see cref="TryRent(int, int, ref readonly int, int, out Memory{byte})"/>):
    /// fails, reserving nothing, when <paramref name="useGuard"/> is no longer <paramref name="expectedGuard"/>.
    /// </summary>
    /// <param name="minimum">The fewest bytes worth reserving, at least 1.</param>
    /// <param name="preferred">The bytes wanted, at least <paramref name="minimum"/>.</param>
    /// <param name="useGuard">A value the owner changes before it ends the use, such as its lease.</param>
    /// <param name="expectedGuard">The value of <paramref name="useGuard"/> in the use the caller reserves for.</param>
    /// <param name="whole">The memory of the whole usable chunk in the current use (see the other overload).</param>
    /// <param name="offset">Where the window starts in <paramref name="whole"/>.</param>
    /// <param name="length">The bytes reserved.</param>
    /// <returns><see langword="false"/> when the chunk has no room for <paramref name="minimum"/> bytes, <see cref="CanReserveWindows"/> is false, or the guard changed.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="minimum"/> is below 1 or above <paramref name="preferred"/>.</exception>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    public bool TryReserveWindow(int minimum, int preferred, ref readonly int useGuard, int expectedGuard, out Memory<byte> whole, out int offset, out int length)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(minimum, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(minimum, preferred);
        whole = _memory;
        byte* start = null;
        nuint reserved = 0;
        bool reservedOne = CanReserveWindows && (_bump is not null
            ? _bump.TryReserveConcurrent((nuint)minimum, (nuint)preferred, WindowAlignment, in useGuard, expectedGuard, out start, out reserved)
            : TryReserveBitSetWindow((nuint)minimum, (nuint)preferred, in useGuard, expectedGuard, out start, out reserved));
        if (!reservedOne)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            whole = default;
            offset = 0;
            length = 0;
            return false;
        }

        offset = (int)(start - _usable);
        length = (int)reserved;
        return true;
    }

    // The preferred size if the bit set has a run for it, else the minimum (a window never takes
    // "what is left" of a bit set chunk: its free runs are not at one end).
    private bool TryReserveBitSetWindow(nuint minimum, nuint preferred, ref readonly int useGuard, int expectedGuard, out byte* start, out nuint reserved)
    {
        if (TryCarveBitSet(preferred, WindowAlignment, in useGuard, expectedGuard, out start))
        {
            reserved = preferred;
            return true;
        }

        if (minimum < preferred && TryCarveBitSet(minimum, WindowAlignment, in useGuard, expectedGuard, out start))
        {
            reserved = minimum;
            return true;
        }

        reserved = 0;
        return false;
    }
}
