namespace AllocHosting.Allocators;

/// <summary>
/// Records where the memory of one arena chunk use comes from and hears of its uses after the end.
/// Set on a chunk for one use (<see cref="ArenaChunk.Tracker"/>, cleared when the use ends): every
/// rent of that use then calls <see cref="CaptureSite"/> and gets memory of its own small manager,
/// whose use after the end throws an <see cref="ObjectDisposedException"/> naming that site and
/// calls <see cref="OnStaleUse"/>.
/// </summary>
/// <remarks>
/// A diagnostic tool: a tracked rent allocates a manager and whatever <see cref="CaptureSite"/>
/// costs (a captured stack, typically). A chunk without a tracker pays one null check per rent.
/// Threads: <see cref="CaptureSite"/> runs on every thread that rents; <see cref="OnStaleUse"/> on the
/// thread that made the stale use, any time later, possibly long after the use ended. Neither may throw.
/// </remarks>
public abstract class ArenaRentTracker
{
    /// <summary>Creates a tracker (for a derived class).</summary>
    protected ArenaRentTracker()
    {
    }

    /// <summary>Where the rent being made comes from; called on the renting thread, before the memory is returned.</summary>
    /// <returns>The site the rented memory carries.</returns>
    public abstract ArenaRentSite CaptureSite();

    /// <summary>Called for every use (<c>Span</c>, <c>Pin</c>, <c>Memory</c>) of memory rented at <paramref name="site"/> after its use of the chunk ended, just before the exception is thrown.</summary>
    /// <param name="site">The site of the rent whose memory was used.</param>
    public abstract void OnStaleUse(ArenaRentSite site);
}
