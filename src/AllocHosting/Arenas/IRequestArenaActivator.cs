namespace AllocHosting;

/// <summary>
/// Installs a request's arena as the context allocator of the request's async flow (see
/// <see cref="SwitchableRequestArenaActivator"/>), or does nothing when
/// <see cref="SwitchableAllocatorOptions.InstallContextAllocator"/> is off.
/// </summary>
internal interface IRequestArenaActivator
{
    /// <summary>Called once per request before the rest of the pipeline runs; the returned scope is disposed when the pipeline finished, before the arena is released.</summary>
    /// <param name="arena">The request's arena (it has taken no memory yet, and should not take any here: requests that never allocate stay free of chunks).</param>
    /// <returns>The scope to dispose, or <see langword="null"/>.</returns>
    IDisposable? Activate(RequestArena arena);
}
