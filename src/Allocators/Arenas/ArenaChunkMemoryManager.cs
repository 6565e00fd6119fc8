namespace AllocHosting.Allocators;

/// <summary>
/// One <see cref="System.Buffers.MemoryManager{T}"/> over the whole usable part of an <see cref="ArenaChunk"/>
/// for one use of the chunk: every <see cref="Memory{T}"/> the chunk rents during that use is a
/// slice of it, so renting allocates nothing. Retired (<see cref="RetirableMemoryManager{T}.Retire"/>)
/// when the chunk is released, after which <c>Span</c> on any of those slices throws
/// <see cref="ObjectDisposedException"/>. Its pins count on the chunk, across its uses, so that
/// the chunk's owner does not reuse memory an asynchronous operation may still write.
/// </summary>
/// <remarks>
/// Under a tracked use (<see cref="ArenaChunk.Tracker"/>) each rent gets a manager of its own over
/// exactly the rented range, carrying the <see cref="ArenaRentSite"/> of that rent: a stale use of
/// that memory (or of any slice of it) reports the route and call site of the very rent it came
/// from, whatever other rents the use made, and tells the tracker. Untracked managers carry
/// nothing and their message is the plain one.
/// </remarks>
/// <typeparam name="T">The element type.</typeparam>
internal sealed unsafe class ArenaChunkMemoryManager<T> : RetirableMemoryManager<T>
    where T : unmanaged
{
    private const string EndedMessage = "This memory was rented from a request arena that has since been released (the request ended); it must no longer be used.";

    private readonly ArenaChunk? _chunk;   // null for a manager without a chunk (tests)

    // Set together for the manager of one tracked rent, else both null.
    private readonly ArenaRentTracker? _tracker;
    private readonly ArenaRentSite? _site;

    internal ArenaChunkMemoryManager(ArenaChunk? chunk, T* start, int length)
        : base(start, length)
    {
        _chunk = chunk;
    }

    internal ArenaChunkMemoryManager(ArenaChunk? chunk, T* start, int length, ArenaRentTracker tracker, ArenaRentSite site)
        : base(start, length)
    {
        _chunk = chunk;
        _tracker = tracker;
        _site = site;
    }

    /// <summary>The site of the tracked rent this manager serves; null for the manager of a whole use.</summary>
    internal ArenaRentSite? Site => _site;

    private protected override void OnPinned() => _chunk?.AddPin(1);

    private protected override void OnUnpinned() => _chunk?.AddPin(-1);

    /// <summary>Retires the manager (the chunk owns the memory, so nothing is freed).</summary>
    protected override void Dispose(bool disposing) => Retire();

    private protected override ObjectDisposedException CreateEndedException()
    {
        if (_site is null)
        {
            return new(nameof(ArenaChunk), EndedMessage);
        }

        // Called once per stale use (every throw creates its exception), so the tracker counts each.
        _tracker!.OnStaleUse(_site);
        return new(nameof(ArenaChunk), $"{EndedMessage} It was rented by {_site}.");
    }
}
