namespace AllocHosting.Allocators;

/// <summary>
/// One <see cref="System.Buffers.MemoryManager{T}"/> over the whole usable part of an <see cref="ArenaChunk"/>
/// for one use of the chunk: every <see cref="Memory{T}"/> the chunk rents during that use is a
/// slice of it, so renting allocates nothing. Retired (<see cref="RetirableMemoryManager{T}.Retire"/>)
/// when the chunk is released, after which <c>Span</c> on any of those slices throws
/// <see cref="ObjectDisposedException"/>.
/// </summary>
/// <typeparam name="T">The element type.</typeparam>
internal sealed unsafe class ArenaChunkMemoryManager<T> : RetirableMemoryManager<T>
    where T : unmanaged
{
    internal ArenaChunkMemoryManager(T* start, int length)
        : base(start, length)
    {
    }

    /// <summary>Retires the manager (the chunk owns the memory, so nothing is freed).</summary>
    protected override void Dispose(bool disposing) => Retire();

    private protected override ObjectDisposedException CreateEndedException() =>
        new(nameof(ArenaChunk), "This memory was rented from a request arena that has since been released (the request ended); it must no longer be used.");
}
