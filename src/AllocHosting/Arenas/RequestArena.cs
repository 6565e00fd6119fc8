using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators;
using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// The arena of one request: a chain of pool chunks taken on first need, plus large chunks (for
/// rents bigger than a pool chunk, and for memory past the per-request maximum under the overflow
/// policy FallBack), all from the pool and its budget. Pooled: one instance serves many requests
/// in turn, so a request costs no allocation until it rents.
/// </summary>
/// <remarks>
/// Threads: the rents may run on several tasks of the request at once (the current chunk is
/// lock-free for bump; chaining takes <see cref="_chainLock"/>). <see cref="Activate"/> and
/// <see cref="Release"/> run on the middleware's flow, before and after the request's work. A
/// rent after the release is refused (the lease check); one that races with the release itself
/// is refused by the second lease check after the rent, or returns memory of the retired use,
/// whose every use throws (see <c>RentedUnderLease</c>).
/// </remarks>
internal sealed partial class RequestArena : IRequestArenaFeature
{
    private const int ByteAlignment = 16;

    private readonly RequestArenaPool _pool;
    private readonly SharedSpinLock _chainLock = new();   // see SharedSpinLock: nothing under it takes it again or waits for other work

    // The pool chunks of this request, _current the last of them (null until the first rent).
    // Written under _chainLock; _current is also read without it.
    private readonly List<ArenaChunk> _chunks = [];
    private ArenaChunk? _current;

    // The large chunks of this request (see LargeChunkClasses) and their bytes, under _chainLock;
    // the last one also serves later rents that fit in what it has left.
    private List<ArenaChunk>? _large;
    private long _largeBytes;

    // MaxArenaSizePerRequest: the bytes of chunks (pool chunks and large chunks, at their full
    // sizes) a request may hold before the overflow policy applies. The global value, or the
    // endpoint's once its profile is resolved (under _chainLock).
    private readonly long _globalMaxBytes;
    private long _maxBytes;

    // The request's endpoint settings and statistics (see EndpointArenaProfile), resolved once, at
    // the request's first chunk, under _chainLock; null for the global options (no endpoint, or a scope).
    private EndpointArenaProfile? _profile;
    private bool _profileResolved;

    // Whether the first chunk was a large chunk sized for the endpoint (then it is also _current,
    // and "overflowed" means more than that one chunk).
    private bool _firstLarge;

    // Odd while a request is running; incremented at activation and at release, so a holder of
    // an older value (an IRequestBuffers that outlived its request) can tell it is stale.
    private int _lease;

    // 1 once a section under _chainLock that may attach memory or objects to the request ran in this
    // use (see EngageAndLock); 0 from Activate. Release skips the lock when it reads 0 after advancing the lease.
    private int _engaged;

    // The pool's processor slot for this use (see Slot); -1 until something needs it.
    private int _slot = -1;
    private HttpContext? _context;
    private bool _rejected;
    private ArenaRentTracker? _tracker;   // Diagnostics Track or Guard: set on every chunk the request takes (null when Off)

    // The memory pool of the current request (AsMemoryPool), replaced when a later request asks.
    private RequestBufferMemoryPool? _memoryPool;

    public RequestArena(RequestArenaPool pool, long maxBytes)
    {
        _pool = pool;
        _globalMaxBytes = maxBytes;
        _maxBytes = maxBytes;
        Figures = new RequestArenaFigures(this);
    }

    public int Lease => Volatile.Read(ref _lease);

    /// <summary>The pool the arena object belongs to.</summary>
    internal RequestArenaPool Pool => _pool;

    /// <summary>
    /// This object's share of the pool's figures, summed over its arena objects by the pool (see
    /// <see cref="RequestArenaObjectPool"/>): whether the current use holds memory, from its first chunk
    /// to its release, and the bytes its ended uses rented (alignment padding included; see
    /// <see cref="Release"/>). Written under the chain lock with plain stores.
    /// </summary>
    internal RequestArenaFigures Figures { get; }

    public bool IsActive => (Volatile.Read(ref _lease) & 1) != 0;

    public RequestArenaKind Kind => _pool.Kind;

    public bool WasRejected => _rejected;

    /// <summary>The endpoint profile of the request (after its first chunk; null: the global options). Read by the pool at release.</summary>
    internal EndpointArenaProfile? Profile => _profile;

    /// <summary>Usable bytes of one chunk: the largest rent a chunk serves.</summary>
    public int ChunkCapacityHint => _pool.ChunkCapacity;

    public long Used => GetUsed(Volatile.Read(ref _lease));

    public long Capacity => GetCapacity(Volatile.Read(ref _lease));

    /// <summary>Bytes the request of <paramref name="lease"/> rented so far, alignment padding included (a snapshot while its tasks rent: the rents in the thread windows of tasks still running may be in it or not).</summary>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended (the pooled arena's figure may be another request's).</exception>
    public long GetUsed(int lease)
    {
        using (_chainLock.EnterScope())
        {
            ThrowIfStale(lease);
            long used = 0;
            foreach (ArenaChunk chunk in _chunks)
            {
                used += chunk.Used;
            }

            if (_large is not null)
            {
                foreach (ArenaChunk chunk in _large)
                {
                    used += chunk.Used;
                }
            }

            // The chunks count the windows' reservations; what their threads have not rented is not usage.
            return Math.Max(0, used - OpenWindowsUnrented(lease));
        }
    }

    /// <summary>Bytes the chunks of the request of <paramref name="lease"/> hold.</summary>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended.</exception>
    public long GetCapacity(int lease)
    {
        using (_chainLock.EnterScope())
        {
            ThrowIfStale(lease);
            return ((long)_chunks.Count * _pool.ChunkCapacity) + _largeBytes;
        }
    }

    /// <summary>The current pool chunk's allocator, to serve the flow's context allocations (takes a chunk if none yet; lock-free once there is one: the fast path).</summary>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended.</exception>
    public Allocators.ContextAllocator GetContextAllocator(int lease)
    {
        ThrowIfStale(lease);
        ArenaChunk? chunk = Volatile.Read(ref _current);
        return chunk is not null ? chunk.ContextAllocator : GetContextAllocatorSlow(lease);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Allocators.ContextAllocator GetContextAllocatorSlow(int lease)
    {
        using (EngageAndLock())
        {
            ThrowIfStale(lease);
            return (_current ?? ChainFirst(0)).ContextAllocator;
        }
    }

    /// <summary>
    /// After the current chunk's context allocator (<paramref name="exhausted"/>) could not serve
    /// <paramref name="size"/> bytes aligned to <paramref name="alignment"/>: chains the next pool chunk
    /// and returns its context allocator, or for a block larger than a pool chunk (a growing
    /// <c>NativeList</c>) takes a large chunk of its class, as a rent of that size does, and returns that
    /// chunk's; either within the per-request maximum. Null when no chunk can serve the request that way
    /// (the allocation then fails with <see cref="AllocatorExhaustedException"/>).
    /// </summary>
    /// <remarks>A large chunk serves the one block it was taken for (a pool chunk keeps serving the flow's later
    /// blocks); it is released with the request like every chunk it took.</remarks>
    /// <exception cref="RequestArenaBudgetExceededException">The budget is spent.</exception>
    public Allocators.ContextAllocator? GetNextContextAllocator(int lease, Allocators.ContextAllocator exhausted, nuint size, nuint alignment)
    {
        using (EngageAndLock())
        {
            ThrowIfStale(lease);
            ArenaChunk? current = _current;
            if (current is not null && !ReferenceEquals(current.ContextAllocator, exhausted))
            {
                return current.ContextAllocator;   // another task chained meanwhile
            }

            if (size <= (nuint)_pool.ChunkCapacity)
            {
                return WithinMaximum(_pool.ChunkSize) ? Chain().ContextAllocator : null;
            }

            if (size > (nuint)LargeChunkClasses.MaxRentBytes || alignment > (nuint)LargeChunkClasses.MaxRentBytes)
            {
                return null;
            }

            // Room for the block at any alignment: a chunk starts aligned to the arena's 16 bytes at least.
            long bytes = (long)size + (alignment > ByteAlignment ? (long)alignment : 0);
            return bytes <= LargeChunkClasses.MaxRentBytes && WithinMaximum(_pool.LargeChunkSizeFor(bytes)) ? TakeLarge(bytes).ContextAllocator : null;
        }
    }

    public Memory<byte> Rent(int length) => Rent(length, Volatile.Read(ref _lease));

    public Memory<T> Rent<T>(int count)
        where T : unmanaged => Rent<T>(count, Volatile.Read(ref _lease));

    public RequestBufferWriter CreateWriter() => CreateWriter(Volatile.Read(ref _lease));

    public MemoryPool<byte> AsMemoryPool() => AsMemoryPool(Volatile.Read(ref _lease));

    /// <summary>The request's memory pool (one per request: a later call of the same request returns it).</summary>
    /// <exception cref="InvalidOperationException">The request of <paramref name="lease"/> has ended.</exception>
    public MemoryPool<byte> AsMemoryPool(int lease)
    {
        ThrowIfStale(lease);
        RequestBufferMemoryPool? pool = Volatile.Read(ref _memoryPool);
        if (pool is null || pool.Lease != lease)
        {
            // Two tasks of the request may both create one; either serves the request.
            pool = new RequestBufferMemoryPool(this, lease);
            Volatile.Write(ref _memoryPool, pool);
        }

        return pool;
    }

    public RequestBufferStream CreateStream() => CreateStream(Volatile.Read(ref _lease));

    public RequestBufferWriter CreateWriter(int lease)
    {
        ThrowIfStale(lease);
        return new RequestBufferWriter(this, lease);
    }

    public RequestBufferStream CreateStream(int lease)
    {
        ThrowIfStale(lease);
        return new RequestBufferStream(this, lease);
    }

    /// <summary>
    /// The pool's per-processor slot this request uses for its chunks, its counters and the return of
    /// its arena object: the processor of the thread that first needs it, read once per request (a
    /// request that rents nothing and returns its arena to its thread's spare never reads it).
    /// </summary>
    /// <remarks>Two threads of one request may both read it first and store different slots: either serves (a slot is a cache and a stripe of summed counters, not an owner).</remarks>
    public int Slot
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            int slot = _slot;
            return slot >= 0 ? slot : ReadSlotSlow();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int ReadSlotSlow() => _slot = _pool.CurrentSlot;

    /// <summary>Whether this use has read <see cref="Slot"/> yet (for tests: a request that rents nothing never does).</summary>
    internal bool HasReadSlot => _slot >= 0;

    /// <summary>Starts serving a request, or an arena scope when <paramref name="context"/> is null (no request body, no 503).</summary>
    public void Activate(HttpContext? context)
    {
        _slot = -1;
        _context = context;
        _rejected = false;
        _tracker = _pool.CreateTracker(context);
        _profile = null;
        _profileResolved = false;
        _firstLarge = false;
        _maxBytes = _globalMaxBytes;
        _engaged = 0;
        Volatile.Write(ref _lease, _lease + 1);
    }

    /// <summary>
    /// Ends the request: no rent is accepted afterwards; the pool and large chunks are released
    /// (managers retired) and go back to the pool, through its quarantine when it has one (see
    /// <see cref="ReleasedChunkQuarantine"/>; the used bytes are cleared by policy before any reuse).
    /// </summary>
    /// <remarks>The bytes the request rented go to <see cref="Figures"/> (the pool's <c>allocated</c> figure).</remarks>
    /// <returns>Whether the request rented at all (then <paramref name="usedBytes"/> and <paramref name="overflowed"/> are meaningful).</returns>
    public bool Release(out long usedBytes, out bool overflowed)
    {
        // The lease moves on first, with a full fence (the increment's), then _engaged is read: a
        // section that engaged before its lease check either shows here (the lock below waits for
        // it and releases what it attached) or reads the new lease and refuses (see EngageAndLock).
        Interlocked.Increment(ref _lease);
        if (Volatile.Read(ref _engaged) == 0)
        {
            // Nothing took the lock in this use: no chunk, no window, no body, nothing to release.
            ForgetRequestObjects();
            usedBytes = 0;
            overflowed = false;
            return false;
        }

        return ReleaseSlow(out usedBytes, out overflowed);
    }

    // The pooled arena keeps nothing of the ended request's objects (their memory is retired by the release).
    private void ForgetRequestObjects()
    {
        _context = null;
        _tracker = null;
        _memoryPool = null;
        ForgetBodyRead();
    }

    // Release of a use that engaged: its chunks, windows and objects, under the lock.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ReleaseSlow(out long usedBytes, out bool overflowed)
    {
        using (_chainLock.EnterScope())
        {
            ForgetRequestObjects();
            usedBytes = 0;
            long allocatedBytes = 0;
            overflowed = _firstLarge ? _chunks.Count + _large!.Count > 1 : _chunks.Count > 1 || _large is not null;
            bool clearNow = _profile is { ClearOnRelease: true };
            bool rented = HoldsMemory;
            foreach (ArenaChunk chunk in _chunks)
            {
                allocatedBytes += chunk.Used;
                usedBytes += _pool.ReleaseChunk(chunk, Slot, clearNow);
            }

            _chunks.Clear();
            _current = null;
            if (_large is not null)
            {
                foreach (ArenaChunk chunk in _large)
                {
                    allocatedBytes += chunk.Used;
                    usedBytes += _pool.ReleaseLargeChunk(chunk, Slot, clearNow);
                }

                _large = null;
                _largeBytes = 0;
            }

            // The chunks counted the thread windows' reservations whole: the usage reported is what was rented.
            long unrented = HarvestWindows();
            usedBytes = Math.Max(0, usedBytes - unrented);
            allocatedBytes = Math.Max(0, allocatedBytes - unrented);
            if (rented)
            {
                Figures.MarkReleased(allocatedBytes);
            }

            return rented;
        }
    }

    // Under _chainLock: takes the next pool chunk and makes it current.
    private ArenaChunk Chain()
    {
        ArenaChunk chunk = _pool.TakeChunk(this);
        chunk.Tracker = _tracker;   // before the chunk is published: every rent of it is tracked
        NoteHoldsMemory();
        _chunks.Add(chunk);
        Volatile.Write(ref _current, chunk);
        return chunk;
    }

    // Under _chainLock, once per request before its first chunk: the endpoint's profile (routing has
    // run by the first rent; a request that rents before routing, or a scope, keeps the global
    // options). Throws for an endpoint that disabled arenas or whose settings are invalid.
    private void ResolveProfile()
    {
        if (!_profileResolved)
        {
            _profile = _pool.Profiles.Resolve(_context);
            _maxBytes = _profile?.MaxBytes ?? _globalMaxBytes;
            _profileResolved = true;
        }

        _profile?.ThrowIfUnusable();
    }

    // Under _chainLock, when the request has no chunk yet and needs one for a rent of bytes (0: the
    // context allocator): the endpoint's first chunk, a large chunk of the class its profile asks for
    // (made current, so rents bump from it lock-free) when that is bigger than a pool chunk and fits
    // the maximum, else a pool chunk.
    private ArenaChunk ChainFirst(long bytes)
    {
        ResolveProfile();
        return TryChainFirstLarge(bytes) ?? Chain();
    }

    // Under _chainLock, when the request has no chunk yet and its profile is resolved: when the profile
    // asks for a first chunk bigger than a pool chunk that fits the maximum and can be had now, takes
    // it as the current chunk; null (nothing taken, nothing waited for) otherwise.
    private ArenaChunk? TryChainFirstLarge(long bytes)
    {
        long size = _pool.FirstChunkSizeFor(_profile, bytes);
        if (size > 0 && WithinMaximum(size) && _pool.TryTakeFirstLargeChunk(size) is { } chunk)
        {
            AddLarge(chunk);
            _firstLarge = true;
            Volatile.Write(ref _current, chunk);
            return chunk;
        }

        return null;
    }

    // Under _chainLock: takes a large chunk that holds a rent of bytes.
    private ArenaChunk TakeLarge(long bytes)
    {
        ArenaChunk chunk = _pool.TakeLargeChunk(this, bytes);
        AddLarge(chunk);
        return chunk;
    }

    // Under _chainLock: records a large chunk the request took.
    private void AddLarge(ArenaChunk chunk)
    {
        chunk.Tracker = _tracker;   // diagnostics (null when Off), before any rent of it
        NoteHoldsMemory();
        (_large ??= []).Add(chunk);
        _largeBytes += chunk.Capacity;
    }

    // Under _chainLock: whether a further chunk of size bytes keeps the request within its maximum
    // (the options' validation keeps the maximum at least one pool chunk).
    private bool WithinMaximum(long size) => ((long)_chunks.Count * _pool.ChunkSize) + _largeBytes + size <= _maxBytes;

    // Whether this request took any memory (counted once in allochosting.request_arena.active).
    private bool HoldsMemory => _chunks.Count > 0 || _large is not null;

    // Under _chainLock, before a chunk is added: counts the request once, at its first chunk.
    private void NoteHoldsMemory()
    {
        if (!HoldsMemory)
        {
            Figures.MarkActive();
        }
    }

    /// <summary>Called by the pool when it refuses a chunk because the budget is spent.</summary>
    internal void MarkRejected(TimeSpan retryAfter)
    {
        if (_rejected)
        {
            return;
        }

        _rejected = true;
        HttpContext? context = _context;
        if (context is not null && !context.Response.HasStarted)
        {
            // Exception pages that catch the exception before the middleware clear the headers;
            // this puts Retry-After back on whatever 503 response they send.
            string seconds = ((long)retryAfter.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
            context.Response.OnStarting(static state =>
            {
                var (response, value) = ((HttpResponse, string))state;
                if (response.StatusCode == StatusCodes.Status503ServiceUnavailable)
                {
                    response.Headers.RetryAfter = value;
                }

                return Task.CompletedTask;
            }, (context.Response, seconds));
        }
    }

    // Takes the chain lock for a section that may attach memory or objects to the request (chunks, the
    // body), whose lease check comes first thing under the lock: marks the use engaged before taking the
    // lock, so that the lock's compare-and-swap (a full fence, see SharedSpinLock.Enter) orders that store
    // before the check's read of the lease, and Release (which advances the lease, then reads _engaged)
    // cannot miss a section that passes its check. One locked instruction less per renting request than a
    // fence of its own. Once per use; a stale caller may mark a later use, which only sends that use's
    // release the slow way.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private SharedSpinLock.Scope EngageAndLock()
    {
        if (_engaged == 0)
        {
            Volatile.Write(ref _engaged, 1);
        }

        return _chainLock.EnterScope();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ThrowIfStale(int lease)
    {
        if (((lease & 1) == 0) || lease != Volatile.Read(ref _lease))
        {
            ThrowNotActive();
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNotActive() =>
        throw new InvalidOperationException(
            "No request arena is active: request buffers can only be rented while a request that runs through the request-arena middleware "
            + "(services.AddSwitchableAllocators(), optionally app.UseRequestArena()) is in progress, not after it ended or from work that outlives it.");
}
