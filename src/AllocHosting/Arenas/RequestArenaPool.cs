using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AllocHosting;

/// <summary>
/// The process-wide pool behind the request arenas, composed of one part per job: the arena
/// objects (<see cref="RequestArenaObjectPool"/>), the chunks' memory
/// (<see cref="ArenaChunkSource"/>), the budget and admission (<see cref="ArenaChunkBudget"/>) and
/// the trimming of idle chunks (<see cref="IdleChunkTrimmer"/>). The pool itself starts and ends
/// requests, applies the overflow policy, and keeps the figures of the <c>AllocHosting</c> meter.
/// </summary>
/// <remarks>
/// Threads: <see cref="RentArena"/> and <see cref="ReturnArena"/> run on the middleware's flow;
/// the chunk members on whatever task of a request rents (its <see cref="RequestArena"/> serialises
/// them per request); the figures on metric and health-check callbacks; <see cref="Dispose"/> once,
/// at shutdown. Every member may be called from any thread.
/// </remarks>
internal sealed class RequestArenaPool : IDisposable
{
    private readonly SwitchableAllocatorOptions _options;
    private readonly AllocHostingMetrics _metrics;
    private readonly ILogger _logger;
    private readonly string _kindTag;
    private readonly ArenaChunkSource _chunks;
    private readonly ArenaChunkBudget _budget;
    private readonly IdleChunkTrimmer _trimmer;
    private readonly RequestArenaObjectPool _arenas;
    private readonly ReleasedChunkQuarantine _quarantine;
    private readonly bool _delayed;   // ReuseDelay is above zero (else only pinned chunks go through the quarantine)
    private readonly bool _clear;
    private readonly StaleUseReporter? _diagnostics;   // null under Diagnostics Off

    // The counters behind the observable instruments; any thread. The requests holding memory and the
    // bytes of ended requests are kept per arena object (RequestArenaFigures) and summed by _arenas;
    // the window rents in a processor counter, added to in the arena's slot when a thread's window
    // hands its figures over.
    private readonly ProcessorCounter _windowRents = new();             // rents carved from thread windows, handed over per request and thread
    private long _allocatedReported;                                    // Interlocked: the largest AllocatedBytesForCounter returned
    private long _rejectedCount;                                        // Interlocked
    private long _lastRejectionTimestamp;                               // Interlocked; 0 until the first rejection
    private readonly TimeProvider _timeProvider;

    /// <summary>A pool of the options' arenas carved from <paramref name="chunks"/>, trimmed on <paramref name="timeProvider"/>'s clock.</summary>
    public RequestArenaPool(IOptions<SwitchableAllocatorOptions> options, ArenaChunkSource chunks, AllocHostingMetrics metrics, ILogger<RequestArenaPool> logger, TimeProvider timeProvider)
    {
        _options = options.Value;
        _timeProvider = timeProvider;
        _metrics = metrics;
        _logger = logger;
        _chunks = chunks;
        _kindTag = AllocHostingMetrics.ArenaKindName(Kind);
        _budget = new ArenaChunkBudget(_options, chunks, metrics, logger);
        Profiles = new EndpointArenaProfiles(_options);
        _arenas = new RequestArenaObjectPool(this, () => new RequestArena(this, _options.MaxArenaSizePerRequest));
        _clear = _options.ClearPolicy == ArenaClearPolicy.ClearUsed;
        // Diagnostics Guard protects chunks while they wait, so every released chunk waits a while.
        bool guard = _options.Diagnostics == ArenaDiagnostics.Guard;
        TimeSpan delay = guard && _options.ReuseDelay < SwitchableAllocatorOptions.MinGuardReuseDelay ? SwitchableAllocatorOptions.MinGuardReuseDelay : _options.ReuseDelay;
        _delayed = delay > TimeSpan.Zero;
        _diagnostics = _options.Diagnostics == ArenaDiagnostics.Off ? null : new StaleUseReporter(metrics, logger);
        _quarantine = new ReleasedChunkQuarantine(
            // The system clock whatever the app registered: a fake clock in an app's tests must
            // not keep released memory out of use for ever.
            delay, _clear, _arenas.SlotCount, TimeProvider.System, _budget.Return, _budget.ReturnLarge, logger, protect: guard);
        if (_diagnostics is not null)
        {
            _logger.ArenaDiagnosticsOn(_options.Diagnostics);
        }

        _metrics.Observe(this);
        _trimmer = new IdleChunkTrimmer(_budget, _options.IdleTrimInterval, timeProvider, logger);
        _logger.ArenaPoolCreated(_kindTag, ChunkSize, _options.MemoryBudget, MaxChunks, chunks.Memory.GetType().Name);
    }

    public RequestArenaKind Kind => _chunks.Kind;

    public int ChunkSize => _chunks.ChunkSize;

    /// <summary>Usable bytes of one chunk.</summary>
    public int ChunkCapacity => _chunks.ChunkCapacity;

    /// <summary>The budget in chunks.</summary>
    public int MaxChunks => _budget.MaxChunks;

    public SwitchableAllocatorOptions Options => _options;

    /// <summary>The endpoints' arena settings and usage statistics (see <see cref="EndpointArenaProfile"/>).</summary>
    public EndpointArenaProfiles Profiles { get; }

    /// <summary>
    /// The size of the first chunk a request of <paramref name="profile"/>'s endpoint takes for a
    /// first rent of <paramref name="bytes"/>: the smallest large-chunk class that holds the
    /// endpoint's first-chunk figure when that is above one pool chunk (bump arenas, pooled classes
    /// only), else 0 for a pool chunk. Only while the chunks in use (and waiting out
    /// <c>ReuseDelay</c>) leave half of the budget free: under pressure requests fall back to pool
    /// chunks, which share the budget more finely, so the hint never causes a rejection a chain of
    /// pool chunks would have avoided.
    /// </summary>
    public long FirstChunkSizeFor(EndpointArenaProfile? profile, long bytes)
    {
        long wanted = Math.Max(profile?.FirstChunkBytes ?? 0, bytes);
        if (wanted <= ChunkSize || Kind != RequestArenaKind.Bump)
        {
            return 0;
        }

        IReadOnlyList<long> classes = LargeClassSizes;
        if (wanted > classes[^1])
        {
            return 0;
        }

        long size = _budget.LargeChunkSizeFor(wanted);
        return _budget.BytesInUse + size <= _options.MemoryBudget / 2 ? size : 0;
    }

    /// <summary>Pool and large chunks held by requests now (not those waiting out <c>ReuseDelay</c>).</summary>
    public int ChunksInUse
    {
        get
        {
            // The quarantine first: a chunk counts there until it is back in the budget, so read in
            // this order a chunk on its way back is never taken for one in use.
            int quarantined = QuarantinedChunks;
            return Math.Max(0, _budget.ChunksInUse - quarantined);
        }
    }

    /// <summary>Bytes of the chunks held by requests now, at their full sizes: what the health check compares with the budget.</summary>
    public long BytesInUse
    {
        get
        {
            long quarantined = QuarantinedBytes;
            return Math.Max(0, _budget.BytesInUse - quarantined);
        }
    }

    /// <summary>Bytes of the chunks waiting out <c>ReuseDelay</c> (or a pin) before reuse, at their full sizes.</summary>
    public long QuarantinedBytes => _quarantine.Snapshot().Bytes;

    /// <summary>Chunks reused before their <c>ReuseDelay</c> because the budget was spent.</summary>
    public long EarlyReuses => _quarantine.EarlyReuses;

    /// <summary>Bytes of the chunks that exist, idle or in use: what the budget counts.</summary>
    public long CommittedBytes => _budget.CommittedBytes;

    /// <summary>The size classes of large chunks (see <see cref="LargeChunkClasses"/>).</summary>
    public IReadOnlyList<long> LargeClassSizes => _budget.LargeClassSizes;

    /// <summary>Bytes rented by requests now, in pool and large chunks: the figure of <c>allochosting.live</c> (request).</summary>
    public long LiveBytes => _budget.LiveBytes;

    /// <summary>Requests holding arena memory now: the figure of <c>allochosting.request_arena.active</c>.</summary>
    public long ActiveArenas => _arenas.CountActive();

    /// <summary>
    /// Rents served from arena memory since start: the figure of <c>allochosting.request_arena.rents</c>.
    /// Read from the chunks' allocation counters when asked, plus the rents carved from the threads'
    /// rent windows (see <see cref="RequestRentWindow"/>), which are counted per window with plain
    /// stores and handed over when the request is released or the thread moves on to another
    /// request: exact once the requests have ended, a figure that may trail the rents of running
    /// requests until then.
    /// </summary>
    public long RentCount => _budget.RentCount + _windowRents.Value;

    /// <summary>Counts <paramref name="rents"/> rents carved from a thread's rent window (handed over by the window or by its request's release).</summary>
    public void CountWindowRents(int slot, long rents)
    {
        if (rents != 0)
        {
            _windowRents.Add(slot, rents);
        }
    }

    /// <summary>Bytes handed out by request arenas since start (released requests plus those in flight).</summary>
    /// <remarks>
    /// Not monotonic: while a request runs, its in-flight share counts the thread windows it reserved
    /// whole, and at its release only what it rented joins the released total (and a read between
    /// the two updates sees neither). The counter reads <see cref="AllocatedBytesForCounter"/>.
    /// </remarks>
    public long AllocatedBytes => _arenas.ReleasedAllocatedBytes + LiveBytes;

    /// <summary>
    /// <see cref="AllocatedBytes"/> as the <c>allochosting.allocated</c> counter reports it: never less
    /// than a value it returned before (a counter that goes down reads as a reset to Prometheus and
    /// its rate functions). A dip at a release is held at the earlier value until the figure passes
    /// it again; the difference is at most the unrented tails of the windows a release hands back.
    /// </summary>
    public long AllocatedBytesForCounter => AtomicAllocatorCounters.RaiseToAtLeast(ref _allocatedReported, AllocatedBytes);

    /// <summary>The measurements of <c>allochosting.mapped</c>.</summary>
    public IEnumerable<Measurement<long>> ObserveMapped() => _chunks.ObserveMapped();

    /// <summary>Requests rejected for lack of memory since start (for the health check: every probe reads the same figure).</summary>
    public long RejectedCount => Interlocked.Read(ref _rejectedCount);

    /// <summary>How long ago the last request was rejected for lack of memory; null if none was.</summary>
    public TimeSpan? SinceLastRejection
    {
        get
        {
            long last = Interlocked.Read(ref _lastRejectionTimestamp);
            return last == 0 ? null : _timeProvider.GetElapsedTime(last);
        }
    }

    /// <summary>The processor slot of the calling thread now (a request reads it once, see <see cref="RequestArena.Slot"/>).</summary>
    internal int CurrentSlot => _arenas.CurrentIndex;

    /// <summary>Starts a request (or, with a null <paramref name="context"/>, an arena scope): an arena object, whose processor slot is read when first needed.</summary>
    public RequestArena RentArena(HttpContext? context)
    {
        // The processor's slot is read only when needed (RequestArena.Slot): the thread's spare arena
        // object needs none, and a request that rents nothing then never reads it.
        RequestArena arena = _arenas.Rent();
        arena.Activate(context);
        return arena;
    }

    /// <summary>Ends the arena's request: releases its memory, records its usage, and keeps the object for the next request.</summary>
    /// <remarks>A null <paramref name="context"/> ends an arena scope: its usage is tagged <c>scope</c>, and a refused rent is the scope's caller's exception, not a rejected request.</remarks>
    public void ReturnArena(RequestArena arena, HttpContext? context)
    {
        bool rejected = arena.WasRejected;
        if (arena.Release(out long used, out bool overflowed))
        {
            EndpointArenaProfile? profile = arena.Profile;
            profile?.Record(used);
            _metrics.ArenaReleased(used, overflowed, _kindTag, context is null ? AllocHostingMetrics.ScopeOwner : AllocHostingMetrics.RequestOwner, profile?.Route);
        }

        if (rejected && context is not null)
        {
            Interlocked.Increment(ref _rejectedCount);
            Interlocked.Exchange(ref _lastRejectionTimestamp, Math.Max(1, _timeProvider.GetTimestamp()));
            _metrics.Rejected();
            _logger.RequestRejected(context.TraceIdentifier);
        }

        _arenas.Return(arena);
    }

    /// <summary>The diagnostics tracker for a request (or, <paramref name="context"/> null, an arena scope) starting now; null under Diagnostics Off.</summary>
    public Allocators.ArenaRentTracker? CreateTracker(HttpContext? context) => _diagnostics?.CreateTracker(context);

    /// <summary>Gives a request its next chunk, synchronously: an idle one or a new one within the budget; it never waits (see <see cref="TakeChunkAsync"/>).</summary>
    /// <exception cref="RequestArenaBudgetExceededException">The budget is spent.</exception>
    public ArenaChunk TakeChunk(RequestArena arena) => _budget.TakeHot(arena.Slot) ?? TakeChunkSlow(arena);

    // The slot's hot chunk is gone: chunks whose quarantine ended go back first (so the pool does not
    // create chunks while expired ones wait), then the budget's other paths.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ArenaChunk TakeChunkSlow(RequestArena arena) =>
        TakeMakingRoom(arena.Slot, 0) ?? _budget.Take(arena.Slot) ?? RefuseSlow(arena);

    // A pool chunk (largeSize 0) or a large chunk of class size largeSize, at once, after the
    // quarantine let out its expired chunks and, if the budget is spent, its oldest ones early; null
    // (counting nothing) when the quarantine has nothing more to give. Several attempts: under load
    // another request may take the chunk let out for this one before it does.
    private ArenaChunk? TakeMakingRoom(int slot, long largeSize)
    {
        const int Attempts = 8;
        _quarantine.ReleaseExpired();
        for (int attempt = 0; attempt < Attempts; attempt++)
        {
            MakeRoomInQuarantine(largeSize == 0 ? ChunkSize : largeSize, slot);
            if (_budget.TryTakeNow(slot, largeSize) is { } chunk)
            {
                return chunk;
            }

            if (_quarantine.Count == 0)
            {
                break;
            }
        }

        return null;
    }

    // Rents waiting for memory are served before the delay runs out: the chunks released longest ago
    // leave early (counted) while any rent waits, as they would for a rent that found the budget spent.
    private void ServeWaitersFromQuarantine(int slot)
    {
        while (_budget.Waiting > 0 && _quarantine.ReleaseOldest(slot))
        {
        }
    }

    // When the chunks that requests hold or that wait in the quarantine leave no room for a chunk of
    // size bytes, the ones released longest ago leave the quarantine early (counted) until there is
    // room or none is left: memory waiting out the delay must not turn into a refused request.
    private void MakeRoomInQuarantine(long size, int slot)
    {
        while (_budget.BytesInUse + size > _options.MemoryBudget && _quarantine.ReleaseOldest(slot))
        {
        }
    }

    // The budget is spent: the request is marked for a 503 with Retry-After.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ArenaChunk RefuseSlow(RequestArena arena)
    {
        arena.MarkRejected(_options.RetryAfter);
        throw new RequestArenaBudgetExceededException(
            $"The request arena budget ({_options.MemoryBudget} bytes, {MaxChunks} chunks of {ChunkSize} bytes; setting {SwitchableAllocatorOptions.SectionName}:MemoryBudget) is spent; the request is refused with 503.");
    }

    /// <summary>
    /// For an asynchronous rent, first: a pool chunk (<paramref name="largeSize"/> 0) or a large chunk of
    /// <paramref name="largeSize"/> bytes (<see cref="LargeChunkSizeFor"/>) if one is to be had at once
    /// without overtaking a waiting rent; null otherwise (nothing counted: the rent goes on to <see cref="TakeChunkAsync"/>).
    /// </summary>
    /// <exception cref="InsufficientMemoryException">The chunk is larger than the whole budget.</exception>
    public ArenaChunk? TryTakeChunkNow(RequestArena arena, long largeSize)
    {
        if (largeSize > _options.MemoryBudget)
        {
            _metrics.Failure("arena_full");
            throw new InsufficientMemoryException(
                $"A rent needs a chunk of {largeSize} bytes, more than the whole request arena budget ({SwitchableAllocatorOptions.SectionName}:MemoryBudget, {_options.MemoryBudget} bytes).");
        }

        // As TakeChunk: the processor's hot chunk, then, as TakeChunkSlow, expired chunks, then (the
        // budget spent) the oldest ones early.
        return (largeSize == 0 ? _budget.TakeHot(arena.Slot) : null) ?? TakeMakingRoom(arena.Slot, largeSize);
    }

    /// <summary>
    /// For an asynchronous rent, then: the chunk of <see cref="TryTakeChunkNow"/>, or under the policy Wait
    /// one that comes back while the rent waits, without blocking, in the budget's queue; null when refused
    /// (the caller refuses the request with <see cref="Refuse"/> if it is still running).
    /// </summary>
    /// <exception cref="OperationCanceledException">A token was canceled while the rent waited.</exception>
    public ValueTask<ArenaChunk?> TakeChunkAsync(RequestArena arena, long largeSize, CancellationToken first, CancellationToken second) =>
        largeSize == 0 ? _budget.TakeAsync(arena.Slot, first, second) : _budget.TakeLargeAsync(largeSize, first, second);

    /// <summary>Refuses the arena's request because the budget is spent (503 with Retry-After).</summary>
    /// <exception cref="RequestArenaBudgetExceededException">Always.</exception>
    public ArenaChunk Refuse(RequestArena arena) => RefuseSlow(arena);

    /// <summary>Rents waiting for memory now: the figure of <c>allochosting.request_arena.waiting</c>.</summary>
    public int WaitingRents => _budget.Waiting;

    /// <summary>
    /// Gives back a chunk that an asynchronous rent received after its request ended, before anything
    /// was rented from it: no use to retire or clear, so it goes straight back to the budget (which
    /// hands it to the next waiter, if any).
    /// </summary>
    public void ReturnUnused(ArenaChunk chunk, bool large, int slot)
    {
        if (large)
        {
            _budget.ReturnLarge(chunk);
        }
        else
        {
            _budget.Return(chunk, slot);
        }
    }

    /// <summary>
    /// Ends a request's use of a pool chunk (its managers retire) and gives it back: into the
    /// quarantine, which clears it by policy and returns it to slot <paramref name="slot"/> once
    /// <c>ReuseDelay</c> has passed, or (no delay) cleared now and straight into that hot slot.
    /// </summary>
    /// <returns>The high-water mark of the use: the bytes it may have written.</returns>
    public long ReleaseChunk(ArenaChunk chunk, int slot, bool clearNow = false)
    {
        // Retired first: from then on no new pin can start, so a chunk found unpinned stays so.
        long highWater = chunk.Retire();
        ClearNow(chunk, clearNow);
        if (_delayed || chunk.IsPinned)
        {
            _quarantine.Add(chunk, slot, large: false, ChunkSize);
            ServeWaitersFromQuarantine(slot);
        }
        else
        {
            ClearRetired(chunk);
            _budget.Return(chunk, slot);
        }

        return highWater;
    }

    // An endpoint that asks for clearing the global policy does not do (ClearOnRelease): its bytes are
    // zeroed at release, on the releasing flow (the chunk's owner until it is handed on).
    private void ClearNow(ArenaChunk chunk, bool clearNow)
    {
        if (clearNow && !_clear)
        {
            chunk.ClearPending();
        }
    }

    // Without a delay: the retired chunk's bytes are cleared (or dropped) now, before its next use.
    private void ClearRetired(ArenaChunk chunk)
    {
        if (_clear)
        {
            chunk.ClearPending();
        }
        else
        {
            chunk.DropPending();
        }
    }

    /// <summary>Ends a request's use of a large chunk and gives it back, through the quarantine as for pool chunks.</summary>
    /// <returns>The high-water mark of the use.</returns>
    public long ReleaseLargeChunk(ArenaChunk chunk, int slot, bool clearNow = false)
    {
        long highWater = chunk.Retire();
        ClearNow(chunk, clearNow);
        if (_delayed || chunk.IsPinned)
        {
            _quarantine.Add(chunk, slot, large: true, chunk.Capacity);
            ServeWaitersFromQuarantine(slot);
        }
        else
        {
            ClearRetired(chunk);
            _budget.ReturnLarge(chunk);
        }

        return highWater;
    }

    /// <summary>Chunks released by requests that are waiting out <c>ReuseDelay</c> (or a pin) before reuse.</summary>
    public int QuarantinedChunks => _quarantine.Count;

    /// <summary>
    /// Before a request takes a chunk past <c>MaxArenaSizePerRequest</c>: under the overflow policy
    /// Fail, refuses the rent; under FallBack, lets it go on (the chunk still comes from the pool and
    /// its budget) and logs it.
    /// </summary>
    /// <exception cref="InsufficientMemoryException">The overflow policy is Fail.</exception>
    public void ApplyOverflowPolicy(long bytes) => ApplyOverflowPolicy(bytes, null);

    /// <summary>As <see cref="ApplyOverflowPolicy(long)"/>, under the settings of <paramref name="profile"/>'s endpoint (null: the global options).</summary>
    /// <exception cref="InsufficientMemoryException">The overflow policy is Fail.</exception>
    public void ApplyOverflowPolicy(long bytes, EndpointArenaProfile? profile)
    {
        if ((profile?.OverflowPolicy ?? _options.OverflowPolicy) == ArenaOverflowPolicy.Fail)
        {
            _metrics.Failure("arena_full");
            if (profile is not null)
            {
                throw new InsufficientMemoryException(
                    $"The request's arena is full: a rent of {bytes} bytes does not fit within the MaxArenaSizePerRequest ({profile.MaxBytes} bytes) of endpoint '{profile.Name}', whose OverflowPolicy is Fail.");
            }

            throw new InsufficientMemoryException(
                $"The request's arena is full: a rent of {bytes} bytes does not fit within {SwitchableAllocatorOptions.SectionName}:MaxArenaSizePerRequest ({_options.MaxArenaSizePerRequest} bytes), and {SwitchableAllocatorOptions.SectionName}:OverflowPolicy is Fail.");
        }

        _logger.ArenaOverflowFallback(bytes);
    }

    /// <summary>The bytes of the large chunk that serves a rent of <paramref name="bytes"/> (its class, or oversize).</summary>
    /// <exception cref="ArgumentOutOfRangeException">No chunk can hold <paramref name="bytes"/>.</exception>
    public long LargeChunkSizeFor(long bytes) => _budget.LargeChunkSizeFor(bytes);

    /// <summary>
    /// Gives a request a large chunk that holds a rent of <paramref name="bytes"/>: an idle one of
    /// its class, or a new one within the budget, as for pool chunks.
    /// </summary>
    /// <exception cref="InsufficientMemoryException">The rent needs more than the whole budget.</exception>
    /// <exception cref="RequestArenaBudgetExceededException">The budget is spent.</exception>
    /// <exception cref="ArgumentOutOfRangeException">No chunk can hold <paramref name="bytes"/>.</exception>
    public ArenaChunk TakeLargeChunk(RequestArena arena, long bytes)
    {
        long size = _budget.LargeChunkSizeFor(bytes);
        if (size > _options.MemoryBudget)
        {
            _metrics.Failure("arena_full");
            throw new InsufficientMemoryException(
                $"A rent of {bytes} bytes needs a chunk of {size} bytes, more than the whole request arena budget ({SwitchableAllocatorOptions.SectionName}:MemoryBudget, {_options.MemoryBudget} bytes).");
        }

        return TakeMakingRoom(arena.Slot, size) ?? _budget.TakeLarge(bytes) ?? RefuseSlow(arena);
    }

    /// <summary>A large chunk of class size <paramref name="size"/> for a request's first chunk (see <see cref="FirstChunkSizeFor"/>), if one can be had now; null (nothing refused, nothing waited for) otherwise.</summary>
    public ArenaChunk? TryTakeFirstLargeChunk(long size)
    {
        _quarantine.ReleaseExpired();
        return _budget.TryTakeLargeNow(size);
    }

    public void Dispose()
    {
        _quarantine.Dispose();
        _budget.Dispose();
        _trimmer.Dispose();
    }
}
