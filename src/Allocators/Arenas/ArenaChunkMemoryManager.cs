namespace AllocHosting.Allocators;

/// <summary>
/// One <see cref="System.Buffers.MemoryManager{T}"/> over the whole usable part of an <see cref="ArenaChunk"/>
/// for one use of the chunk: every <see cref="Memory{T}"/> the chunk rents during that use is a
/// slice of it, so renting allocates nothing. Retired (<see cref="RetirableMemoryManager{T}.Retire"/>)
/// when the chunk is released, after which <c>Span</c> on any of those slices throws
/// <see cref="ObjectDisposedException"/>. Its pins count on the chunk, across its uses, so that
/// the chunk's owner does not reuse memory an asynchronous operation may still write.
/// </summary>
/// <typeparam name="T">The element type.</typeparam>
internal sealed unsafe class ArenaChunkMemoryManager<T> : RetirableMemoryManager<T>
    where T : unmanaged
{
    private readonly ArenaChunk? _chunk;   // null for a manager without a chunk (tests)

    internal ArenaChunkMemoryManager(ArenaChunk? chunk, T* start, int length)
        : base(start, length)
    {
        _chunk = chunk;
    }

    private protected override void OnPinned() => _chunk?.AddPin(1);

    private protected override void OnUnpinned() => _chunk?.AddPin(-1);

    /// <summary>Retires the manager (the chunk owns the memory, so nothing is freed).</summary>
    protected override void Dispose(bool disposing) => Retire();

    private protected override ObjectDisposedException CreateEndedException() =>
        new(nameof(ArenaChunk), "This memory was rented from a request arena that has since been released (the request ended); it must no longer be used.");
}
