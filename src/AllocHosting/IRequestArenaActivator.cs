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
    /// <param name="arena">The request's arena (it has taken no memory yet, and should not take any here: requests that never allocate stay free of chunks).</param>
    /// <returns>The scope to dispose, or <see langword="null"/>.</returns>
    IDisposable? Activate(RequestArena arena);
}

/// <summary>The activator when <see cref="SwitchableAllocatorOptions.InstallContextAllocator"/> is off: installs nothing, so requests that never rent take no chunk.</summary>
internal sealed class NoRequestArenaActivator : IRequestArenaActivator
{
    public IDisposable? Activate(RequestArena arena) => null;
}

/// <summary>
/// Installs the request's arena as the context allocator of the request's async flow in the
/// registered <see cref="SwitchableAllocator"/>, and switches the flow to
/// <see cref="AllocatorKind.Context"/>: code of the request that allocates through the switchable
/// allocator is served from the request's arena and released with it. Lazily: the flow gets a
/// <see cref="RequestArenaContextSource"/>, so the arena takes a chunk only when the request first
/// allocates (through the switchable allocator or <see cref="IRequestBuffers"/>). The chunks' context
/// allocators are their thread-safe forms, so they may be used beside concurrent rents.
/// </summary>
internal sealed class SwitchableRequestArenaActivator(SwitchableAllocator switchable) : IRequestArenaActivator
{
    public IDisposable? Activate(RequestArena arena) => switchable.UseContext(new RequestArenaContextSource(arena, arena.Lease));
}

/// <summary>
/// One request's arena as the source of its flow's context allocator: the current chunk's (a chunk
/// is taken at the first allocation). Bound to the request's lease, so work that outlives the request
/// and still allocates through the switchable allocator fails with
/// <see cref="InvalidOperationException"/> (as a late <see cref="IRequestBuffers"/> rent does) instead
/// of taking memory from the arena's next request.
/// </summary>
internal sealed class RequestArenaContextSource(RequestArena arena, int lease) : IContextAllocatorSource
{
    public ContextAllocator GetContextAllocator() => arena.GetContextAllocator(lease);

    public ContextAllocator? GetContextAllocatorAfter(ContextAllocator exhausted, nuint size, nuint alignment) =>
        arena.GetNextContextAllocator(lease, exhausted, size);
}
