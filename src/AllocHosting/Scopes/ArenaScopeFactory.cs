using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;

namespace AllocHosting;

/// <summary>
/// The registered <see cref="IArenaScopeFactory"/>: takes arena objects from the request pool for
/// scopes, keeps the scopes still live in a registry, and at its disposal (host shutdown, when the
/// service provider disposes its singletons) releases every scope its owner never disposed, logging
/// where each was created and counting it (<c>allochosting.scope.leaked</c>).
/// </summary>
/// <remarks>
/// <para>
/// No finalizer and no weak references: the registry holds live scopes strongly, so a scope dropped
/// without <see cref="ArenaScope.Dispose"/> keeps its memory until the factory is disposed, and is
/// reported then, with its creation site. Memory that reached other objects (a <see cref="Memory{T}"/>
/// in a queue) is never released under a user who may still read it, except at shutdown.
/// </para>
/// <para>
/// Threads: <see cref="CreateScope"/> and the scopes' ends may run on any thread at once; the
/// registry is guarded by <see cref="_lock"/> (taken once per scope created and once per scope
/// ended, never per rent). <see cref="Dispose"/> runs once at shutdown; a scope created after it
/// is refused, and a scope's owner disposing it at the same time as the factory is decided by the
/// scope's own state (<see cref="ArenaScope.TryEnd"/>): exactly one of them releases the arena.
/// </para>
/// </remarks>
internal sealed class ArenaScopeFactory(RequestArenaPool pool, AllocHostingMetrics metrics, ILogger<ArenaScopeFactory> logger) : IArenaScopeFactory, IDisposable
{
    private readonly Lock _lock = new();
    private readonly HashSet<ArenaScope> _live = [];
    private bool _disposed;

    /// <summary>Scopes created and not yet disposed.</summary>
    public int LiveCount
    {
        get
        {
            lock (_lock)
            {
                return _live.Count;
            }
        }
    }

    public ArenaScope CreateScope(
        [CallerMemberName] string callerMemberName = "",
        [CallerFilePath] string callerFilePath = "",
        [CallerLineNumber] int callerLineNumber = 0)
    {
        RequestArena arena = pool.RentArena(null);
        var scope = new ArenaScope(this, arena, callerMemberName, callerFilePath, callerLineNumber);
        lock (_lock)
        {
            if (!_disposed)
            {
                _live.Add(scope);
                return scope;
            }
        }

        pool.ReturnArena(arena, null);
        throw new ObjectDisposedException(nameof(IArenaScopeFactory), "The arena scope factory was disposed (the host has shut down): no scope can be created.");
    }

    /// <summary>Releases the arena of <paramref name="scope"/>, which its owner disposed (after <see cref="ArenaScope.TryEnd"/>).</summary>
    internal void End(ArenaScope scope)
    {
        lock (_lock)
        {
            _live.Remove(scope);
        }

        pool.ReturnArena(scope.Arena, null);
    }

    public void Dispose()
    {
        ArenaScope[] leaked;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            leaked = [.. _live];
            _live.Clear();
        }

        foreach (ArenaScope scope in leaked)
        {
            if (scope.TryEnd())
            {
                logger.ArenaScopeLeaked(scope.Member, scope.File, scope.Line, scope.Arena.GetUsed(scope.Lease));
                metrics.ScopeLeaked();
                pool.ReturnArena(scope.Arena, null);
            }
        }
    }
}
