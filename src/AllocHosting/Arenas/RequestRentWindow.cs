using System.Runtime.CompilerServices;

namespace AllocHosting;

/// <summary>
/// A thread's rent window: a range of one chunk of one request (an arena and its lease) that the
/// thread reserved with one atomic and now carves with plain stores, in the spirit of the GC's
/// per-thread allocation contexts. One per thread (<see cref="Current"/>), reused for whatever
/// request the thread rents for next.
/// </summary>
/// <remarks>
/// <para>
/// Threads: every field but <see cref="_state"/> is written by the owning thread only, so the fast
/// path needs no locked instruction. A window is valid for the request of (<see cref="Arena"/>,
/// <see cref="Lease"/>) only: a rent for any other request (another arena, or the same arena
/// reused by a later request) misses and re-keys it, so a stale window never hands one request's
/// memory to another. Its memory is sliced from <see cref="Whole"/>, the chunk's memory of the use
/// the window was reserved in, so a late rent that races with the release gets memory of the
/// retired manager (and is refused by the arena's second lease check).
/// </para>
/// <para>
/// Counting: the rents served and the bytes reserved but never rented (the tails of windows the
/// thread moved on from, and the open window's) are kept here and handed over once per window key,
/// either by the thread when it re-keys the window or by the arena's release, which harvests the
/// windows registered with it. <see cref="_state"/> decides which of the two does it: the owner
/// sets it to an even value when it keys the window, and whoever moves it on to the next odd
/// value with a compare-exchange takes the figures; the other finds it moved on and takes nothing.
/// </para>
/// </remarks>
internal sealed class RequestRentWindow
{
    /// <summary>The first window a thread reserves for a request, in bytes.</summary>
    internal const int FirstSize = 4 * 1024;

    /// <summary>The largest window (and the largest rent served through windows): each refill for the same request doubles the size up to this, or up to a sixteenth of the chunk if that is less.</summary>
    internal const int MaxSize = 64 * 1024;

    [ThreadStatic]
    private static RequestRentWindow? t_current;

    // The key: the request this window serves (null: none yet).
    public RequestArena? Arena;
    public int Lease;

    // The chunk's memory of the use and the window's range in it, [Cursor, Limit) offsets into Whole.
    public Memory<byte> Whole;
    public int Cursor;
    public int Limit;

    // The size of the next refill for this key.
    public int NextSize;

    // For the key, until handed over: rents served from windows, and bytes reserved but not rented
    // in windows the thread has left (the open window's tail is Limit - Cursor).
    public long Rents;
    public long Unrented;

    // Even: keyed, figures not yet handed over (the value the arena registered). Odd: handed over.
    private int _state = 1;

    /// <summary>The calling thread's window (created on its first rent).</summary>
    public static RequestRentWindow Current
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_current ?? CreateSlow();
    }

    /// <summary>The calling thread's window if it has one, without creating it.</summary>
    public static RequestRentWindow? CurrentOrNull => t_current;

    /// <summary>The registration value of the current key (even while the figures are not handed over).</summary>
    public int State => Volatile.Read(ref _state);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static RequestRentWindow CreateSlow() => t_current = new RequestRentWindow();

    /// <summary>
    /// On the owning thread: hands the figures of the old key over to its arena's pool (unless the
    /// arena's release harvested them already), then keys the window for the request of
    /// <paramref name="arena"/> and <paramref name="lease"/>, empty.
    /// </summary>
    /// <returns>The new registration value, for <see cref="TryHarvest"/>.</returns>
    public int Rekey(RequestArena arena, int lease)
    {
        int state = _state;
        if ((state & 1) == 0 && Interlocked.CompareExchange(ref _state, state + 1, state) == state)
        {
            Arena!.WindowLeft(Lease, Rents, Unrented + (Limit - Cursor));
        }

        Arena = arena;
        Lease = lease;
        Whole = default;
        Cursor = 0;
        Limit = 0;
        NextSize = FirstSize;
        Rents = 0;
        Unrented = 0;
        int next = (_state | 1) + 1;
        Volatile.Write(ref _state, next);
        return next;
    }

    /// <summary>
    /// On any thread (the arena's release): takes the figures of the key registered as
    /// <paramref name="state"/>, if the owner has not handed them over yet; false if it has.
    /// </summary>
    /// <remarks>Read while no legitimate rent of the key can run (its request has ended); a late rent racing with it may or may not be counted, as it is refused.</remarks>
    public bool TryHarvest(int state, out long rents, out long unrented)
    {
        if (Volatile.Read(ref _state) == state && Interlocked.CompareExchange(ref _state, state + 1, state) == state)
        {
            rents = Volatile.Read(ref Rents);
            unrented = Volatile.Read(ref Unrented) + Math.Max(0, Volatile.Read(ref Limit) - Volatile.Read(ref Cursor));
            return true;
        }

        rents = 0;
        unrented = 0;
        return false;
    }
}
