using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// Installs a request's arena as the context allocator of the request's async flow (see
/// <see cref="SwitchableRequestArenaActivator"/>), or does nothing when
/// <see cref="SwitchableAllocatorOptions.InstallContextAllocator"/> is off.
/// </summary>
internal interface IRequestArenaActivator
{
    /// <summary>Called once per request before the rest of the pipeline runs; the returned scope is disposed when the pipeline finished, before the arena is released.</summary>
    /// <param name="arena">The request's arena (it has taken no memory yet: taking a chunk here makes the request non-lazy).</param>
    /// <returns>The scope to dispose, or <see langword="null"/>.</returns>
    IDisposable? Activate(RequestArena arena);
}

/// <summary>The activator when <see cref="SwitchableAllocatorOptions.InstallContextAllocator"/> is off: installs nothing, so requests that never rent take no chunk.</summary>
internal sealed class NoRequestArenaActivator : IRequestArenaActivator
{
    public IDisposable? Activate(RequestArena arena) => null;
}

/// <summary>
/// Installs the request's current arena chunk as the context allocator of the request's async flow
/// in the registered <see cref="SwitchableAllocator"/>, and switches the flow to
/// <see cref="AllocatorKind.Context"/>: code of the request that allocates through the switchable
/// allocator is served from the request's arena and released with it. The chunk's context
/// allocator is its thread-safe form, so it may be used beside concurrent
/// <see cref="IRequestBuffers"/> rents. It takes a chunk when the request starts.
/// </summary>
internal sealed class SwitchableRequestArenaActivator(SwitchableAllocator switchable) : IRequestArenaActivator
{
    public IDisposable? Activate(RequestArena arena) => switchable.UseContext(arena.GetContextAllocator(arena.Lease));
}
