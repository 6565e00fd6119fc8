using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AllocHosting;

/// <summary>
/// The process-wide pool behind the request arenas: arena objects (no memory, reused per
/// request), and chunks of native memory within the budget.
/// </summary>
/// <remarks>
/// <para>
/// Layout: memory comes from one <see cref="IMemorySource"/> (memory mapping with the NUMA
/// placement of the options where supported) in segments, each an <see cref="ArenaMemorySource"/>
/// of up to <see cref="SlotsPerSegment"/> chunk-sized slots, created as the pool grows. A chunk
/// (<see cref="ArenaChunk"/>) holds one slot for its whole life; idle chunks wait on a stack and
/// the most recently returned goes out first, so its pages and cache lines are warm.
/// </para>
/// <para>
/// Cost: the top of that stack and the most recently returned arena object each sit in a
/// one-slot cache taken and filled with a single atomic exchange, so a request that fits in one
/// chunk takes no pool lock; the locks guard only the deeper stacks, growth, trimming and waits.
/// </para>
/// <para>
/// Budget: at most <see cref="MaxChunks"/> chunks exist. When none is idle and none can be
/// created, a rent waits (policy Wait) for a chunk to come back, then is rejected.
/// Trimming: every <c>IdleTrimInterval</c> the chunks that stayed idle through the whole interval
/// (the low-water mark of the idle stack) are disposed, coldest first, and segments left empty go
/// back to the operating system.
/// </para>
/// </remarks>
internal sealed class RequestArenaPool : IDisposable
{
    internal const int SlotsPerSegment = 16;
    private const int MaxPooledArenas = 256;

    /// <summary>Bytes a fallback chunk keeps beyond the rent it is sized for (alignment padding).</summary>
    internal const int FallbackSlack = 64;

    // Fallback chunks are sized in whole pages.
    private const nuint FallbackPageSize = 4096;

    private readonly SwitchableAllocatorOptions _options;
    private readonly AllocHostingMetrics _metrics;
    private readonly ILogger _logger;
    private readonly IMemorySource _source;
    private readonly string _kindTag;
    private readonly int _maxChunksPerRequest;
    private readonly ITimer? _trimTimer;

    // Guards everything below; waiting rents Monitor.Wait on it.
    private readonly object _lock = new();
    private readonly List<ArenaMemorySource> _segments = [];
    private readonly HashSet<ArenaChunk> _allChunks = [];   // a set: trimming removes many, each in O(1)
    // The idle chunks as a stack (top = last); grows as chunks come back, MaxChunks at most.
    private readonly List<ArenaChunk> _idle = [];
    private int _idleLowWater;
    private int _waiters;

    // One-slot caches of idle chunks in front of _idle, one per processor, taken and filled
    // without _lock: a request that fits in one chunk takes back the chunk the previous request on
    // its core returned (LIFO). They count as idle. A rent that finds its slot and _idle empty takes
    // another core's before it counts against the budget. Trim and Dispose empty them under _lock;
    // a return sees _waiters (changed with Interlocked, so the slot and the count are ordered) and
    // pulses a waiting rent.
    private readonly ProcessorSlots<ArenaChunk> _hotChunks = new();

    // Set when the spent budget was logged; cleared when a chunk comes back, so an overload logs
    // one warning per episode instead of one per refused rent.
    private bool _budgetSpentLogged;
    private long _rejectedSinceHealthCheck;

    // Arena objects, reused across requests. _hotArenas are one-slot caches (one per processor) in
    // front of the stack: the common rent/return pair costs one uncontended exchange each instead
    // of a lock each.
    private readonly ProcessorSlots<RequestArena> _hotArenas = new();
    private readonly Lock _arenaLock = new();
    private readonly RequestArena?[] _arenas = new RequestArena?[MaxPooledArenas];
    private int _arenaCount;

    // Plain counters behind the observable instruments.
    private readonly ProcessorCounter _releasedAllocatedBytes = new();   // per core: added by every renting request
    private readonly ProcessorCounter _activeArenas = new();            // +1 at a request's first chunk, -1 at its release
    private long _fallbackAllocatedBytes;
    private long _fallbackLiveBytes;
    private long _retiredRentCount;   // rents served by chunks since disposed (trimmed chunks, fallback chunks)
    private long _unsupportedMappedBytes;
    private bool _disposed;

    public RequestArenaPool(IOptions<SwitchableAllocatorOptions> options, AllocHostingMetrics metrics, ILogger<RequestArenaPool> logger, TimeProvider timeProvider)
        : this(options, metrics, logger, timeProvider, NumaTopology.Current)
    {
    }

    /// <summary>Tests only: a pool that places its memory for <paramref name="topology"/> (a fake multi-node one) instead of this machine's.</summary>
    internal RequestArenaPool(IOptions<SwitchableAllocatorOptions> options, AllocHostingMetrics metrics, ILogger<RequestArenaPool> logger, TimeProvider timeProvider, NumaTopology topology)
    {
        _options = options.Value;
        _metrics = metrics;
        _logger = logger;
        Kind = _options.ArenaKind;
        _kindTag = Kind == RequestArenaKind.Bump ? "bump" : "bit_set";
        ChunkSize = _options.InitialArenaSize;
        MaxChunks = (int)Math.Min(int.MaxValue, _options.MemoryBudget / ChunkSize);
        _maxChunksPerRequest = (int)Math.Max(1, _options.MaxArenaSizePerRequest / ChunkSize);
        _source = CreateSource(_options, topology, logger);

        // The usable bytes of a chunk (a bit set chunk keeps its bit set inside).
        using (ArenaChunk probe = CreateChunk(NativeMemorySource.Shared))
        {
            ChunkCapacity = probe.Capacity;
        }

        _metrics.Observe(this);
        _trimTimer = timeProvider.CreateTimer(static state => ((RequestArenaPool)state!).Trim(), this, _options.IdleTrimInterval, _options.IdleTrimInterval);
        _logger.ArenaPoolCreated(_kindTag, ChunkSize, _options.MemoryBudget, MaxChunks, _source.GetType().Name);
    }

    public RequestArenaKind Kind { get; }

    public int ChunkSize { get; }

    /// <summary>Usable bytes of one chunk.</summary>
    public int ChunkCapacity { get; }

    /// <summary>The budget in chunks.</summary>
    public int MaxChunks { get; }


    public SwitchableAllocatorOptions Options => _options;

    /// <summary>Where the pool's segments come from (a <see cref="MemoryMapSource"/> where supported).</summary>
    internal IMemorySource Source => _source;

    /// <summary>Chunks that exist now (idle or in use).</summary>
    public int ChunkCount
    {
        get
        {
            lock (_lock)
            {
                return _allChunks.Count;
            }
        }
    }

    /// <summary>Chunks idle in the pool now.</summary>
    public int IdleChunkCount
    {
        get
        {
            lock (_lock)
            {
                return _idle.Count + _hotChunks.Count;
            }
        }
    }

    /// <summary>Chunks held by requests now.</summary>
    public int ChunksInUse
    {
        get
        {
            lock (_lock)
            {
                return _allChunks.Count - _idle.Count - _hotChunks.Count;
            }
        }
    }

    /// <summary>Segments (memory regions) that exist now.</summary>
    public int SegmentCount
    {
        get
        {
            lock (_lock)
            {
                return _segments.Count;
            }
        }
    }

    /// <summary>Bytes held by requests now: the figure of <c>allochosting.live</c> (request).</summary>
    public long LiveBytes
    {
        get
        {
            lock (_lock)
            {
                long live = 0;
                foreach (ArenaChunk chunk in _allChunks)
                {
                    live += chunk.Used;
                }

                return live;
            }
        }
    }

    public long FallbackLiveBytes => Interlocked.Read(ref _fallbackLiveBytes);

    /// <summary>Requests holding arena memory now: the figure of <c>allochosting.request_arena.active</c>.</summary>
    public long ActiveArenas => _activeArenas.Value;

    /// <summary>Counts a request that took its first memory (its arena's first chunk or fallback chunk).</summary>
    public void ArenaActivated(int slot) => _activeArenas.Add(slot, 1);

    /// <summary>
    /// Rents served from arena memory since start: the figure of <c>allochosting.request_arena.rents</c>.
    /// Read from the chunks' allocation counters when asked (nothing is counted per rent beyond what
    /// the chunk's allocator counts anyway); rents from overflow fallback memory count once the
    /// request that made them has ended.
    /// </summary>
    public long RentCount
    {
        get
        {
            lock (_lock)
            {
                long rents = Interlocked.Read(ref _retiredRentCount);
                foreach (ArenaChunk chunk in _allChunks)
                {
                    rents += chunk.Statistics.AllocationCount;
                }

                return rents;
            }
        }
    }

    /// <summary>Requests rejected since the last call (for the health check).</summary>
    public long TakeRejectedCount() => Interlocked.Exchange(ref _rejectedSinceHealthCheck, 0);

    public RequestArena RentArena(HttpContext context)
    {
        // One processor-id read per request: the arena keeps the slot for its chunk and its return.
        int slot = _hotArenas.CurrentIndex;
        RequestArena? arena = _hotArenas.Take(slot) ?? RentPooledArena();
        arena.Activate(context, slot);
        return arena;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private RequestArena RentPooledArena()
    {
        RequestArena? arena = null;
        lock (_arenaLock)
        {
            if (_arenaCount > 0)
            {
                arena = _arenas[--_arenaCount];
                _arenas[_arenaCount] = null;
            }
        }

        return arena ?? new RequestArena(this, _maxChunksPerRequest);
    }

    /// <summary>Ends the arena's request: releases its memory, records its usage, and keeps the object for the next request.</summary>
    public void ReturnArena(RequestArena arena, HttpContext context)
    {
        bool rejected = arena.WasRejected;
        if (arena.Release(_options.ClearPolicy == ArenaClearPolicy.ClearUsed, out long used, out long allocated, out bool overflowed))
        {
            _releasedAllocatedBytes.Add(arena.Slot, allocated);
            _activeArenas.Add(arena.Slot, -1);
            _metrics.ArenaReleased(used, overflowed, _kindTag);
        }

        if (rejected)
        {
            Interlocked.Increment(ref _rejectedSinceHealthCheck);
            _metrics.Rejected();
            _logger.RequestRejected(context.TraceIdentifier);
        }

        if (!_hotArenas.TryPut(arena, arena.Slot))
        {
            ReturnPooledArena(arena);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReturnPooledArena(RequestArena arena)
    {
        lock (_arenaLock)
        {
            if (_arenaCount < _arenas.Length)
            {
                _arenas[_arenaCount++] = arena;
            }
        }
    }

    /// <summary>Gives a request its next chunk: an idle one, a new one within the budget, or (policy Wait) one that comes back soon.</summary>
    /// <exception cref="RequestArenaBudgetExceededException">The budget is spent.</exception>
    public ArenaChunk TakeChunk(RequestArena arena)
    {
        ArenaChunk? chunk = _hotChunks.Take(arena.Slot) ?? TryTakeChunk();
        if (chunk is null && _options.BudgetPolicy == ArenaBudgetPolicy.Wait && _options.BudgetWaitTimeout > TimeSpan.Zero)
        {
            chunk = WaitForChunk(_options.BudgetWaitTimeout);
        }

        if (chunk is null)
        {
            _metrics.Failure("budget_exhausted");
            LogBudgetSpentOnce();
            arena.MarkRejected(_options.RetryAfter);
            throw new RequestArenaBudgetExceededException(
                $"The request arena budget ({_options.MemoryBudget} bytes, {MaxChunks} chunks of {ChunkSize} bytes; setting {SwitchableAllocatorOptions.SectionName}:MemoryBudget) is spent; the request is refused with 503.");
        }

        return chunk;
    }

    /// <summary>Gives a chunk back, into the hot slot <paramref name="slot"/> (the returning arena's).</summary>
    public void ReturnChunk(ArenaChunk chunk, int slot)
    {
        // The chunk given back last is handed out first: it takes the slot, and the one it
        // displaces (hotter than any on the stack) goes on top of the stack.
        ArenaChunk? displaced = _hotChunks.Exchange(chunk, slot);
        if (displaced is not null)
        {
            ReturnIdleChunk(displaced);
        }

        if (Volatile.Read(ref _disposed) || Volatile.Read(ref _budgetSpentLogged) || Volatile.Read(ref _waiters) > 0)
        {
            SettleHotChunk();
        }
    }

    // After a chunk went to the hot slot while the pool was disposed, a spent budget was logged
    // or a rent was waiting: the rare cases that need _lock.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SettleHotChunk()
    {
        lock (_lock)
        {
            _budgetSpentLogged = false;
            if (_disposed)
            {
                while (_hotChunks.TakeAny() is { } hot)
                {
                    DisposeChunk(hot);
                }

                return;
            }

            if (_waiters > 0)
            {
                Monitor.Pulse(_lock);
            }
        }
    }

    private void ReturnIdleChunk(ArenaChunk chunk)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                DisposeChunk(chunk);
                return;
            }

            _idle.Add(chunk);
            _budgetSpentLogged = false;
            if (_waiters > 0)
            {
                Monitor.Pulse(_lock);
            }
        }
    }

    /// <summary>A chunk from the process allocator for a rent beyond the request's arena (policy FallBack), or the refusal (policy Fail).</summary>
    public ArenaChunk CreateFallback(long bytes)
    {
        if (_options.OverflowPolicy == ArenaOverflowPolicy.Fail)
        {
            _metrics.Failure("arena_full");
            throw new InsufficientMemoryException(
                $"The request's arena is full: a rent of {bytes} bytes does not fit within {SwitchableAllocatorOptions.SectionName}:MaxArenaSizePerRequest ({_options.MaxArenaSizePerRequest} bytes) in chunks of {ChunkSize} bytes, and {SwitchableAllocatorOptions.SectionName}:OverflowPolicy is Fail.");
        }

        long needed = Math.Max(bytes + FallbackSlack, ChunkSize);
        if (needed > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "A rent this large cannot be served.");
        }

        long size = (long)Allocators.Allocator.AlignUp((nuint)needed, FallbackPageSize);
        if (size > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "A rent this large cannot be served.");
        }

        ArenaChunk chunk = ArenaChunk.CreateBump(NativeMemorySource.Shared, (nuint)size, zero: _options.ClearPolicy == ArenaClearPolicy.ClearUsed);
        Interlocked.Add(ref _fallbackLiveBytes, size);
        Interlocked.Add(ref _fallbackAllocatedBytes, size);
        _logger.ArenaOverflowFallback(bytes);
        return chunk;
    }

    public void FreeFallback(ArenaChunk chunk)
    {
        Interlocked.Add(ref _fallbackLiveBytes, -chunk.Capacity);
        Interlocked.Add(ref _retiredRentCount, chunk.Statistics.AllocationCount);
        chunk.Dispose();
    }

    /// <summary>Disposes the chunks idle through the whole interval since the last trim and gives empty segments back.</summary>
    internal void Trim()
    {
        int trimmedChunks = 0;
        int trimmedSegments = 0;
        int remaining;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            // The hot chunks join the top of the stack; they were not idle all interval, as far as
            // the low-water mark knows, so they are not trimmed now.
            while (_hotChunks.TakeAny() is { } hot)
            {
                _idle.Add(hot);
            }

            int surplus = Math.Min(_idleLowWater, _idle.Count);
            if (surplus > 0)
            {
                // The bottom of the stack is the coldest.
                for (int i = 0; i < surplus; i++)
                {
                    DisposeChunk(_idle[i]);
                }

                _idle.RemoveRange(0, surplus);
                trimmedChunks = surplus;
            }

            for (int i = _segments.Count - 1; i >= 0; i--)
            {
                ArenaMemorySource segment = _segments[i];
                if (segment.FreeSlotCount == segment.SlotCount)
                {
                    ReleaseSegment(segment);
                    _segments.RemoveAt(i);
                    trimmedSegments++;
                }
            }

            _idleLowWater = _idle.Count;
            remaining = _allChunks.Count;
        }

        if (trimmedChunks + trimmedSegments > 0)
        {
            _logger.ArenaChunksTrimmed(trimmedChunks, trimmedSegments, remaining);
        }
    }

    /// <summary>Bytes handed out by request arenas since start (released requests plus those in flight).</summary>
    public long AllocatedBytes => _releasedAllocatedBytes.Value + LiveBytes;

    /// <summary>Bytes handed out by the overflow fallback (the process allocator) since start.</summary>
    public long FallbackAllocatedBytes => Interlocked.Read(ref _fallbackAllocatedBytes);

    public IEnumerable<Measurement<long>> ObserveMapped()
    {
        if (!MemoryMapSource.IsSupported)
        {
            return [new(Interlocked.Read(ref _unsupportedMappedBytes), new KeyValuePair<string, object?>(AllocHostingMetrics.NumaNodeTag, -1))];
        }

        var measurements = new List<Measurement<long>>();
        foreach (var (node, bytes) in MemoryMapSource.GetProcessMappedBytesByNode())
        {
            measurements.Add(new(bytes, new KeyValuePair<string, object?>(AllocHostingMetrics.NumaNodeTag, node)));
        }

        return measurements;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            Volatile.Write(ref _disposed, true);
            while (_hotChunks.TakeAny() is { } hot)
            {
                DisposeChunk(hot);
            }

            foreach (ArenaChunk chunk in _idle)
            {
                DisposeChunk(chunk);
            }

            _idle.Clear();
            foreach (ArenaMemorySource segment in _segments)
            {
                // Gives the region back once the last chunk still held by a request comes home.
                segment.Dispose();
            }

            _segments.Clear();
            Monitor.PulseAll(_lock);
        }

        _trimTimer?.Dispose();
    }

    private static IMemorySource CreateSource(SwitchableAllocatorOptions options, NumaTopology topology, ILogger logger) =>
        MemorySource.CreateDefault(new MemoryMapSourceOptions
        {
            NumaPolicy = PolicyFor(options.NumaPlacement, topology),
            Warning = message => logger.MemorySourceDegraded(message),
        });

    /// <summary>The NUMA policy of the pool's memory source for <paramref name="placement"/> on <paramref name="topology"/>.</summary>
    internal static NumaPolicy PolicyFor(ArenaNumaPlacement placement, NumaTopology topology)
    {
        // A single-node machine gains nothing from a policy but would pay an mbind per mapping.
        if (!topology.IsMultiNode)
        {
            return NumaPolicy.Default;
        }

        return placement switch
        {
            ArenaNumaPlacement.LocalToRequestThread => NumaPolicy.Local,
            ArenaNumaPlacement.Interleave => NumaPolicy.Interleave(NumaNodeSet.Of(topology.Nodes.Select(node => node.Id))),
            _ => NumaPolicy.Default,
        };
    }

    private void LogBudgetSpentOnce()
    {
        lock (_lock)
        {
            if (_budgetSpentLogged)
            {
                return;
            }

            _budgetSpentLogged = true;
        }

        _logger.ArenaBudgetSpent(_options.MemoryBudget);
    }

    private ArenaChunk? TryTakeChunk()
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_hotChunks.TakeAny() is { } hot)
            {
                return hot;
            }

            if (_idle.Count > 0)
            {
                ArenaChunk chunk = _idle[^1];
                _idle.RemoveAt(_idle.Count - 1);
                if (_idle.Count < _idleLowWater)
                {
                    _idleLowWater = _idle.Count;
                }

                return chunk;
            }

            return _allChunks.Count < MaxChunks ? CreatePoolChunk() : null;
        }
    }

    private ArenaChunk? WaitForChunk(TimeSpan timeout)
    {
        long deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        lock (_lock)
        {
            Interlocked.Increment(ref _waiters);
            try
            {
                while (!_disposed)
                {
                    if (_idle.Count > 0 || _allChunks.Count < MaxChunks || _hotChunks.Count > 0)
                    {
                        break;
                    }

                    long remaining = deadline - Environment.TickCount64;
                    if (remaining <= 0 || !Monitor.Wait(_lock, (int)remaining))
                    {
                        break;
                    }
                }
            }
            finally
            {
                Interlocked.Decrement(ref _waiters);
            }

            return _disposed ? null : TryTakeChunk();
        }
    }

    // Under _lock: a new chunk on a free slot of some segment, or of a new segment.
    private ArenaChunk CreatePoolChunk()
    {
        foreach (ArenaMemorySource segment in _segments)
        {
            if (segment.FreeSlotCount > 0)
            {
                return Register(CreateChunk(segment));
            }
        }

        int slots = Math.Min(SlotsPerSegment, MaxChunks - (_segments.Count * SlotsPerSegment));
        slots = Math.Max(1, Math.Min(slots, MaxChunks - _allChunks.Count));
        var created = new ArenaMemorySource(_source, (nuint)ChunkSize, slots);
        _segments.Add(created);
        if (!MemoryMapSource.IsSupported)
        {
            Interlocked.Add(ref _unsupportedMappedBytes, (long)created.Range.Length);
        }

        return Register(CreateChunk(created));
    }

    private ArenaChunk Register(ArenaChunk chunk)
    {
        _allChunks.Add(chunk);
        return chunk;
    }

    // Memory maps come zeroed; the portable source's memory must be zeroed once when clearing is on.
    private ArenaChunk CreateChunk(IMemorySource source)
    {
        bool zero = !MemoryMapSource.IsSupported && _options.ClearPolicy == ArenaClearPolicy.ClearUsed;
        return Kind == RequestArenaKind.Bump
            ? ArenaChunk.CreateBump(source, (nuint)ChunkSize, zero)
            : ArenaChunk.CreateBitSet(source, (nuint)ChunkSize, (nuint)_options.BitSetBlockSize, zero);
    }

    // Under _lock.
    private void DisposeChunk(ArenaChunk chunk)
    {
        _allChunks.Remove(chunk);
        Interlocked.Add(ref _retiredRentCount, chunk.Statistics.AllocationCount);
        chunk.Dispose();
    }

    private void ReleaseSegment(ArenaMemorySource segment)
    {
        if (!MemoryMapSource.IsSupported)
        {
            Interlocked.Add(ref _unsupportedMappedBytes, -(long)segment.Range.Length);
        }

        segment.Dispose();
    }
}
