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
/// <remarks>
/// When the registered instance is not <see cref="SwitchableAllocator.Default"/> (a native library or the
/// NUMA heap is the global allocator), the arena is installed in both: code that takes no allocator
/// (<c>new NativeList&lt;T&gt;()</c>) uses <see cref="SwitchableAllocator.Default"/>, and inside a request
/// it must get the request's memory whichever global allocator the application chose.
/// </remarks>
internal sealed class SwitchableRequestArenaActivator(SwitchableAllocator switchable) : IRequestArenaActivator
{
    // The second instance to install in, or null when the registered one is the default.
    private readonly SwitchableAllocator? _default = ReferenceEquals(switchable, SwitchableAllocator.Default) ? null : SwitchableAllocator.Default;

    public IDisposable? Activate(RequestArena arena)
    {
        var source = new RequestArenaContextSource(arena, arena.Lease);
        IDisposable registered = switchable.UseContext(source);
        return _default is null ? registered : new BothScopes(registered, _default.UseContext(source));
    }

    // The two installations, undone in reverse order.
    private sealed class BothScopes(IDisposable first, IDisposable second) : IDisposable
    {
        public void Dispose()
        {
            second.Dispose();
            first.Dispose();
        }
    }
}
