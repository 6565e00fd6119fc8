using System.Runtime.CompilerServices;
using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// The per-thread rent windows of the arena (see <see cref="RequestRentWindow"/>): byte rents of a
/// flow that stays on a thread bump in that thread's window of the current chunk with plain stores;
/// a miss reserves the next window with one compare-exchange on the chunk's offset.
/// </summary>
/// <remarks>
/// <para>
/// Threads: any task of the request may rent; each carves only its own thread's window, so
/// concurrent tasks (<c>Task.WhenAll</c>) never share a range, and a flow that moves to another
/// thread after an <c>await</c> simply continues in that thread's window (one reservation on the
/// first rent there). The windows a request's threads keyed register with the arena (one
/// interlocked increment each), so that <see cref="Release"/> can hand over their figures.
/// </para>
/// <para>
/// Figures: a window's reservation counts in the chunk's <see cref="ArenaChunk.Used"/> and
/// high-water mark at once (so clearing covers it, rented or not); the rents carved from it, and
/// the bytes of it never rented, are handed over once per request and thread (see
/// <see cref="RequestRentWindow"/>). The request's reported usage (the histogram, the endpoint
/// statistics, <c>allocated</c>) is the chunks' figure less the unrented bytes handed over, i.e. the
/// bytes rented with their alignment padding; <see cref="GetUsed"/> and the live figure while the
/// request runs include the open windows' unrented tails.
/// </para>
/// </remarks>
internal sealed partial class RequestArena
{
    // The windows whose figures Release harvests: registered by the threads that keyed a window for
    // this request (an interlocked slot claim each), with the window's registration value. Threads
    // past the last slot (a request whose tasks ran on many threads) go on a list under _chainLock.
    private const int RegisteredWindowSlots = 8;
    private readonly RequestRentWindow?[] _windows = new RequestRentWindow?[RegisteredWindowSlots];
    private readonly int[] _windowStates = new int[RegisteredWindowSlots];
    private int _windowCount;        // Interlocked: claims of _windows slots in this use (may exceed the slots)
    private long _leftUnrented;      // Interlocked: unrented bytes handed over by windows that left this request
    private List<(RequestRentWindow Window, int State)>? _moreWindows;   // under _chainLock: windows past the slots

    // The refill of the fast path of Rent(int, int): the calling thread's window did not serve the
    // rent (another request's, exhausted, or none). Reserves the next window in the current chunk
    // and rents from it; a rent that cannot use windows (no chunk yet, a tracked use, a rent of
    // nothing or of more than RequestRentWindow.MaxSize) goes the chunk's way, as before windows.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Memory<byte> RentRefillSlow(int length, int lease)
    {
        // Created on the thread's first rent whatever path that rent takes, so that a thread's one
        // allocation for its window comes with the first rent, not with a later one.
        RequestRentWindow window = RequestRentWindow.Current;
        ArenaChunk? chunk = Volatile.Read(ref _current);
        Memory<byte> memory;
        if (chunk is null || length == 0 || length > RequestRentWindow.MaxSize || !chunk.CanReserveWindows)
        {
            if (chunk is not null && chunk.TryRent(length, ByteAlignment, in _lease, lease, out memory))
            {
                return RentedUnderLease(memory, lease);
            }

            return RentSlow<byte, ByteRent>(length, lease);
        }

        if (!ReferenceEquals(window.Arena, this) || window.Lease != lease)
        {
            RegisterWindow(window, window.Rekey(this, lease), lease);
        }

        // Windows are at most a sixteenth of the chunk, so that the unrented tail a thread leaves
        // (at most one window per thread and chunk) never makes a request need a chunk more.
        int minimum = (length + (ByteAlignment - 1)) & ~(ByteAlignment - 1);
        int largest = Math.Max(ByteAlignment, Math.Min(RequestRentWindow.MaxSize, chunk.Capacity / 16));
        if (!chunk.TryReserveWindow(minimum, Math.Max(Math.Min(window.NextSize, largest), minimum), in _lease, lease, out Memory<byte> whole, out int start, out int reserved))
        {
            // The chunk is full: the slow rent chains the next one (and carves this rent from it
            // exactly); the thread's next rent reserves its window there.
            return RentSlow<byte, ByteRent>(length, lease);
        }

        // Limit stays aligned for the fast path: the last bytes of a window that does not end on
        // the alignment are reserved but never rented.
        int aligned = reserved & ~(ByteAlignment - 1);
        int rentStart;
        if (start == window.Limit && whole.Equals(window.Whole))
        {
            // Nobody reserved since this window: it grows in place, and its tail is rented on.
            rentStart = (window.Cursor + (ByteAlignment - 1)) & ~(ByteAlignment - 1);
            window.Unrented += reserved - aligned;
        }
        else
        {
            // The tail of the window left behind was reserved but will never be rented.
            rentStart = start;
            window.Unrented += window.Limit - window.Cursor + (reserved - aligned);
            window.Whole = whole;
        }

        window.Cursor = rentStart + length;
        window.Limit = start + aligned;
        window.NextSize = Math.Min(window.NextSize * 2, RequestRentWindow.MaxSize);
        if (chunk.Kind == ArenaChunkKind.Bump)
        {
            window.Rents++;
        }

        // (A bit set chunk counted the window's blocks as one allocation of its own: that is this rent.)
        return RentedUnderLease(whole.Slice(rentStart, length), lease);
    }

    // On a window's first rent for this request: a slot for Release to harvest it from, or a place on
    // the list past the slots, so that the request's figures are whole at its release however many
    // threads its tasks ran on.
    private void RegisterWindow(RequestRentWindow window, int state, int lease)
    {
        int index = Interlocked.Increment(ref _windowCount) - 1;
        if (index < RegisteredWindowSlots)
        {
            _windowStates[index] = state;
            Volatile.Write(ref _windows[index], window);
        }
        else
        {
            RegisterMoreWindowSlow(window, state, lease);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void RegisterMoreWindowSlow(RequestRentWindow window, int state, int lease)
    {
        using (_chainLock.EnterScope())
        {
            // A request that ended meanwhile was harvested already: the window hands its figures over
            // when it is keyed again, as an unharvested window always does.
            if (IsLease(lease))
            {
                (_moreWindows ??= []).Add((window, state));
            }
        }
    }

    /// <summary>Called by a thread's window when it moves on from this arena's request of <paramref name="lease"/>: counts its rents, and keeps its unrented bytes for the release (if that request still runs).</summary>
    internal void WindowLeft(int lease, long rents, long unrented)
    {
        _pool.CountWindowRents(Slot, rents);
        if (unrented != 0 && lease == Volatile.Read(ref _lease))
        {
            Interlocked.Add(ref _leftUnrented, unrented);
        }
    }

    // Under _chainLock, after the lease moved on (no legitimate rent of the ended request can run):
    // takes the figures of the windows registered in this use, counts their rents, and returns the
    // bytes they reserved but never rented; the registrations are cleared for the next use.
    private long HarvestWindows()
    {
        int count = Math.Min(Volatile.Read(ref _windowCount), RegisteredWindowSlots);
        long rents = 0;
        // (Read first: most requests have nothing handed over, and then need no locked instruction.)
        long unrented = Volatile.Read(ref _leftUnrented) != 0 ? Interlocked.Exchange(ref _leftUnrented, 0) : 0;
        for (int i = 0; i < count; i++)
        {
            RequestRentWindow? window = Volatile.Read(ref _windows[i]);
            if (window is not null && window.TryHarvest(_windowStates[i], out long windowRents, out long windowUnrented))
            {
                rents += windowRents;
                unrented += windowUnrented;
            }

            _windows[i] = null;
        }

        if (_moreWindows is { Count: > 0 } more)
        {
            foreach ((RequestRentWindow window, int state) in more)
            {
                if (window.TryHarvest(state, out long windowRents, out long windowUnrented))
                {
                    rents += windowRents;
                    unrented += windowUnrented;
                }
            }

            more.Clear();
        }

        Volatile.Write(ref _windowCount, 0);
        if (rents != 0)
        {
            _pool.CountWindowRents(Slot, rents);
        }

        return unrented;
    }

    // Under _chainLock: the unrented bytes of the windows open for the request of lease now (a
    // snapshot: their threads may be renting), for GetUsed.
    private long OpenWindowsUnrented(int lease)
    {
        long unrented = Volatile.Read(ref _leftUnrented);
        int count = Math.Min(Volatile.Read(ref _windowCount), RegisteredWindowSlots);
        for (int i = 0; i < count; i++)
        {
            if (Volatile.Read(ref _windows[i]) is { } window && window.State == _windowStates[i]
                && ReferenceEquals(window.Arena, this) && window.Lease == lease)
            {
                unrented += window.Unrented + Math.Max(0, window.Limit - window.Cursor);
            }
        }

        if (_moreWindows is { } more)
        {
            foreach ((RequestRentWindow window, int state) in more)
            {
                if (window.State == state && ReferenceEquals(window.Arena, this) && window.Lease == lease)
                {
                    unrented += window.Unrented + Math.Max(0, window.Limit - window.Cursor);
                }
            }
        }

        return unrented;
    }
}
