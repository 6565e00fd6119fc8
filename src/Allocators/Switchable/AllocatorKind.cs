namespace AllocHosting.Allocators;

/// <summary>Which allocator of a <see cref="SwitchableAllocator"/> serves new allocations in the current async flow.</summary>
/// <remarks>
/// <see cref="Global"/> is zero so that a flow (or thread) that never switched is in global mode: the
/// seed declared its enum the other way round, which C#'s zero-initialised state cannot follow.
/// The kind only chooses where new blocks come from; frees and resizes always go to the block's owner.
/// </remarks>
public enum AllocatorKind
{
    /// <summary>The global, thread-safe allocator (by default <see cref="NativeMemoryAllocator.Shared"/>).</summary>
    Global = 0,

    /// <summary>The thread-local allocator: each calling thread is served from its own heap.</summary>
    ThreadLocal = 1,

    /// <summary>The <see cref="ContextAllocator"/> installed for the current async flow (a request, a coroutine).</summary>
    Context = 2,
}
