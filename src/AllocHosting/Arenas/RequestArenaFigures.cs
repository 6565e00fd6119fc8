namespace AllocHosting;

/// <summary>
/// One arena object's share of its pool's figures: whether its current use holds memory
/// (<c>allochosting.request_arena.active</c>) and the bytes its ended uses rented (part of
/// <c>allocated</c>). Kept apart from the <see cref="RequestArena"/> so that the pool can still sum
/// them after the arena object itself is gone (see <see cref="RequestArenaObjectPool"/>).
/// </summary>
/// <remarks>
/// Threads: written by the arena's requests with plain stores under its chain lock (a renting
/// request pays no locked instruction for them); read by metric and health callbacks on any thread
/// with volatile reads. <see cref="RegistryIndex"/> is the object pool's, under its lock.
/// </remarks>
internal sealed class RequestArenaFigures
{
    private bool _active;
    private long _releasedAllocated;

    /// <summary>Figures of <paramref name="arena"/>, which the pool holds weakly through them.</summary>
    public RequestArenaFigures(RequestArena arena) => Arena = new WeakReference<RequestArena>(arena);

    /// <summary>The arena object these figures belong to, while it lives: an object lost with its thread (a spare of a thread that ended) is collected, and its figures stay.</summary>
    public WeakReference<RequestArena> Arena { get; }

    /// <summary>Whether the arena's current use holds memory.</summary>
    public bool Active => Volatile.Read(ref _active);

    /// <summary>The bytes rented by the arena's ended uses.</summary>
    public long ReleasedAllocatedBytes => Volatile.Read(ref _releasedAllocated);

    /// <summary>The figures' place in the object pool's list, under its lock; -1 when not listed.</summary>
    public int RegistryIndex { get; set; } = -1;

    /// <summary>Under the arena's chain lock: its use took its first memory.</summary>
    public void MarkActive() => Volatile.Write(ref _active, true);

    /// <summary>Under the arena's chain lock: its use that held memory ended, having rented <paramref name="allocatedBytes"/>.</summary>
    public void MarkReleased(long allocatedBytes)
    {
        Volatile.Write(ref _releasedAllocated, _releasedAllocated + allocatedBytes);
        Volatile.Write(ref _active, false);
    }
}
