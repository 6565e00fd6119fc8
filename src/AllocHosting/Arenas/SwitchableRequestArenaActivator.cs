using AllocHosting.Allocators;

namespace AllocHosting;

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
