using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// One request's arena as the source of its flow's context allocator: the current chunk's (a chunk
/// is taken at the first allocation; a block larger than a pool chunk gets a large chunk of its own). Bound to the request's lease, so work that outlives the request
/// and still allocates through the switchable allocator fails with
/// <see cref="InvalidOperationException"/> (as a late <see cref="IRequestBuffers"/> rent does) instead
/// of taking memory from the arena's next request.
/// </summary>
internal sealed class RequestArenaContextSource(RequestArena arena, int lease) : IContextAllocatorSource
{
    public ContextAllocator GetContextAllocator() => arena.GetContextAllocator(lease);

    public ContextAllocator? GetContextAllocatorAfter(ContextAllocator exhausted, nuint size, nuint alignment) =>
        arena.GetNextContextAllocator(lease, exhausted, size, alignment);
}
