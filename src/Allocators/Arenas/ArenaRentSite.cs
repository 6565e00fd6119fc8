namespace AllocHosting.Allocators;

/// <summary>
/// Where memory of a tracked arena chunk use was rented: the endpoint (or other owner) the use
/// served and the first frame of the caller's code that rented it. Carried by the memory of a
/// tracked rent (see <see cref="ArenaChunk.Tracker"/>), so that a use after the end can say whose
/// memory it was.
/// </summary>
/// <remarks>Immutable; a tracker may hand the same instance to every rent of one (route, call site) pair.</remarks>
public sealed class ArenaRentSite
{
    /// <summary>Creates a site.</summary>
    /// <param name="route">The endpoint's route pattern or display name, or a description of the owner.</param>
    /// <param name="callSite">The caller's frame that rented, for example <c>MyApp.Handlers.Get in Handlers.cs:line 42</c>.</param>
    /// <exception cref="ArgumentNullException"><paramref name="route"/> or <paramref name="callSite"/> is null.</exception>
    public ArenaRentSite(string route, string callSite)
    {
        ArgumentNullException.ThrowIfNull(route);
        ArgumentNullException.ThrowIfNull(callSite);
        Route = route;
        CallSite = callSite;
    }

    /// <summary>The endpoint's route pattern or display name (or a description of the owner).</summary>
    public string Route { get; }

    /// <summary>The caller's frame that rented the memory.</summary>
    public string CallSite { get; }

    /// <summary>The route and the call site, as the stale-use message states them.</summary>
    public override string ToString() => $"endpoint '{Route}' at {CallSite}";
}
