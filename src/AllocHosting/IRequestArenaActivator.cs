namespace AllocHosting;

/// <summary>
/// Installs a request's arena as the context allocator of the request's async flow. THE merge
/// point for the switchable allocator: the default does nothing; the switchable wiring
/// replaces it with one that calls <c>SwitchableAllocator.UseContext(arena.GetContextAllocator(lease))</c>
/// and returns that scope.
/// </summary>
internal interface IRequestArenaActivator
{
    /// <summary>Called once per request before the rest of the pipeline runs; the returned scope is disposed when the pipeline finished, before the arena is released.</summary>
    /// <param name="arena">The request's arena (it has taken no memory yet: taking a chunk here makes the request non-lazy).</param>
    /// <returns>The scope to dispose, or <see langword="null"/>.</returns>
    IDisposable? Activate(RequestArena arena);
}

/// <summary>The activator used until the switchable allocator is wired: installs nothing.</summary>
internal sealed class NoRequestArenaActivator : IRequestArenaActivator
{
    public IDisposable? Activate(RequestArena arena) => null;
}
