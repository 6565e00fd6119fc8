using System.Runtime.CompilerServices;
using AllocHosting.Allocators;
using Microsoft.Extensions.Logging;

namespace AllocHosting;

/// <summary>
/// The memory budget of the request arenas and admission to it: the pool chunks and large chunks
/// that exist, idle or in use, hold at most <c>MemoryBudget</c> bytes; a request's next chunk is an
/// idle one, a new one within the budget (idle chunks of other sizes are disposed to make room when
/// the budget is full), or (policy Wait, asynchronous rents only) one that comes back within the wait
/// timeout (see ArenaChunkBudget.Waiting.cs); otherwise none, and the pool refuses the request. No
/// thread ever blocks waiting for memory.
/// </summary>
/// <remarks>
/// <para>
/// What the budget counts: every chunk at its full size from its creation to its disposal (a pool
/// chunk of <c>InitialArenaSize</c> bytes, a large chunk of its class or oversize bytes; see
/// <see cref="LargeChunkClasses"/>). A segment's free slots stay mapped until the whole segment is
/// free and trimmed, so the mapped bytes may exceed the budget by less than one segment while large
/// chunks displace pool chunks.
/// </para>
/// <para>
/// Idle chunks wait on a stack and the most recently returned goes out first, so its pages and
/// cache lines are warm. The top of that stack is a one-slot cache per processor taken and filled
/// with a single atomic exchange, so a request that fits in one chunk takes no lock; the lock
/// guards only the deeper stack, growth, trimming and waits.
/// </para>
/// <para>
/// Threads: every public member may be called from any thread. <see cref="Take"/> and
/// <see cref="Return"/> (and <see cref="TakeLarge"/>, <see cref="ReturnLarge"/>) run on request threads; <see cref="TrimIdle"/> on the trim timer;
/// <see cref="ChunksInUse"/>, <see cref="LiveBytes"/> and <see cref="RentCount"/> on metric and
/// health-check callbacks; <see cref="Dispose"/> once, at shutdown. The <see cref="ArenaChunkSource"/>
/// is called only under this budget's lock.
/// </para>
/// </remarks>
internal sealed partial class ArenaChunkBudget : IDisposable
{
    private readonly SwitchableAllocatorOptions _options;
    private readonly ArenaChunkSource _source;
    private readonly AllocHostingMetrics _metrics;
    private readonly ILogger _logger;

    // Guards everything below except _hotChunks, and the queue of waiting rents; nobody waits on it
    // beyond its short critical sections.
    private readonly object _lock = new();

    // The idle large chunks by size class.
    private readonly LargeChunkClasses _large;

    // The idle chunks as a stack (top = last); grows as chunks come back, MaxChunks at most.
    private readonly List<ArenaChunk> _idle = [];

    // The fewest chunks on _idle since the last trim: so many stayed idle through the whole interval.
    private int _idleLowWater;

    // Rents waiting for a chunk (the count of _waiting); changed with Interlocked under _lock, read
    // without it by Return and TakeAsync.
    private int _waiters;

    // One-slot caches of idle chunks in front of _idle, one per processor, taken and filled
    // without _lock: a request that fits in one chunk takes back the chunk the previous request on
    // its core returned (LIFO). They count as idle. A rent that finds its slot and _idle empty takes
    // another core's before it counts against the budget. Trim and Dispose empty them under _lock;
    // a return sees _waiters (changed with Interlocked, so the slot and the count are ordered) and
    // serves the waiting rents.
    private readonly ProcessorSlots<ArenaChunk> _hotChunks = new();

    // Set when the spent budget was logged; cleared when a chunk comes back, so an overload logs
    // one warning per episode instead of one per refused rent. Read without the lock by Return.
    private bool _budgetSpentLogged;

    // Set once under _lock; read without it by Return.
    private bool _disposed;

    public ArenaChunkBudget(SwitchableAllocatorOptions options, ArenaChunkSource source, AllocHostingMetrics metrics, ILogger logger)
    {
        _options = options;
        _source = source;
        _metrics = metrics;
        _logger = logger;
        MaxChunks = (int)Math.Min(int.MaxValue, options.MemoryBudget / source.ChunkSize);
        _large = new LargeChunkClasses(source.ChunkSize, options.MaxArenaSizePerRequest);
    }

    /// <summary>The budget in pool chunks (when no large chunk exists).</summary>
    public int MaxChunks { get; }

    /// <summary>The size classes of the large chunks.</summary>
    public IReadOnlyList<long> LargeClassSizes => _large.ClassSizes;

    /// <summary>Pool and large chunks held by requests now.</summary>
    public int ChunksInUse
    {
        get
        {
            lock (_lock)
            {
                return _source.ChunkCount - _idle.Count - _hotChunks.Count + _source.LargeChunkCount - _large.IdleCount;
            }
        }
    }

    /// <summary>Bytes of the chunks that exist now, idle or in use: what the budget counts.</summary>
    public long CommittedBytes
    {
        get
        {
            lock (_lock)
            {
                return Committed;
            }
        }
    }

    /// <summary>Bytes of the chunks held by requests now (pool chunks at their full size, large chunks at their class size).</summary>
    public long BytesInUse
    {
        get
        {
            lock (_lock)
            {
                return Committed - ((long)(_idle.Count + _hotChunks.Count) * _source.ChunkSize) - _large.IdleBytes;
            }
        }
    }

    /// <summary>Idle large chunks, ready for reuse.</summary>
    public int IdleLargeChunkCount
    {
        get
        {
            lock (_lock)
            {
                return _large.IdleCount;
            }
        }
    }

    // Under _lock: the bytes the budget counts now.
    private long Committed => ((long)_source.ChunkCount * _source.ChunkSize) + _source.LargeBytes;

    /// <summary>Bytes held by requests in pool chunks now.</summary>
    public long LiveBytes
    {
        get
        {
            lock (_lock)
            {
                return _source.LiveBytes;
            }
        }
    }

    /// <summary>Rents served by pool and large chunks since start (see <see cref="ArenaChunkSource.RentCount"/>).</summary>
    public long RentCount
    {
        get
        {
            lock (_lock)
            {
                return _source.RentCount;
            }
        }
    }

    /// <summary>
    /// The next chunk of a request of processor slot <paramref name="slot"/>: the fast path takes
    /// the idle chunk of that slot. Null when the budget is spent (the failure is then counted and,
    /// once per episode, logged); the caller refuses the request.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The budget was disposed.</exception>
    public ArenaChunk? Take(int slot) => _hotChunks.Take(slot) ?? TakeSlow(0);

    /// <summary>The idle chunk of processor slot <paramref name="slot"/> only, if any: the fast path of <see cref="Take"/> alone (one atomic exchange).</summary>
    public ArenaChunk? TakeHot(int slot) => _hotChunks.Take(slot);

    /// <summary>
    /// A large chunk that holds a rent of <paramref name="bytes"/>: an idle chunk of its size
    /// class, or a new one within the budget; null when the budget is spent (counted and logged as for <see cref="Take"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">No chunk can hold <paramref name="bytes"/>.</exception>
    /// <exception cref="ObjectDisposedException">The budget was disposed.</exception>
    public ArenaChunk? TakeLarge(long bytes) => TakeSlow(_large.ChunkSizeFor(bytes));

    /// <summary>
    /// A large chunk of <paramref name="size"/> bytes (a class size) if one is idle or fits the
    /// budget now; null otherwise, without waiting, counting or logging: for a first chunk that is a
    /// sizing hint (the adaptive first chunk), whose caller takes a pool chunk instead.
    /// </summary>
    public ArenaChunk? TryTakeLargeNow(long size) => TryTakeChunk(size);

    /// <summary>The bytes of the large chunk that serves a rent of <paramref name="bytes"/> (its class, or oversize).</summary>
    /// <exception cref="ArgumentOutOfRangeException">No chunk can hold <paramref name="bytes"/>.</exception>
    public long LargeChunkSizeFor(long bytes) => _large.ChunkSizeFor(bytes);

    /// <summary>Gives a released large chunk back: onto the idle stack of its class, or (oversize, or after disposal) disposed.</summary>
    public void ReturnLarge(ArenaChunk chunk)
    {
        lock (_lock)
        {
            if (_disposed || !_large.TryReturnIdle(chunk))
            {
                _source.RetireLargeChunk(chunk);
            }

            _budgetSpentLogged = false;
            ServeWaiters();
        }
    }

    /// <summary>Gives a chunk back, into the hot slot <paramref name="slot"/> (the returning arena's).</summary>
    public void Return(ArenaChunk chunk, int slot)
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
            SettleHotChunkSlow();
        }
    }

    /// <summary>
    /// Disposes the chunks idle through the whole interval since the previous call (coldest first)
    /// and gives empty segments back; false when the budget is disposed.
    /// </summary>
    public bool TrimIdle(out int trimmedChunks, out int trimmedSegments, out int remainingChunks)
    {
        trimmedChunks = 0;
        trimmedSegments = 0;
        remainingChunks = 0;
        lock (_lock)
        {
            if (_disposed)
            {
                return false;
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
                    _source.Retire(_idle[i]);
                }

                _idle.RemoveRange(0, surplus);
                trimmedChunks = surplus;
            }

            foreach (ArenaChunk large in _large.TakeIdleThroughInterval())
            {
                _source.RetireLargeChunk(large);
                trimmedChunks++;
            }

            trimmedSegments = _source.ReleaseEmptySegments();
            _idleLowWater = _idle.Count;
            remainingChunks = _source.ChunkCount;
            return true;
        }
    }

    /// <summary>Disposes the idle chunks and the segments (each gives its memory back once its last chunk held by a request comes home) and refuses the waiting rents.</summary>
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
                _source.Retire(hot);
            }

            foreach (ArenaChunk chunk in _idle)
            {
                _source.Retire(chunk);
            }

            _idle.Clear();
            foreach (ArenaChunk large in _large.TakeAllIdle())
            {
                _source.RetireLargeChunk(large);
            }

            _source.CloseSegments();
            RefuseWaiters();
        }
    }

    // A pool chunk (largeSize 0) or a large chunk of largeSize bytes for a synchronous rent: an idle
    // one or a new one within the budget; else null, counted and logged. It never waits (whatever the
    // policy: a blocked thread-pool thread would starve the requests that could give memory back), and
    // while rents wait it takes nothing, so it never overtakes them.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ArenaChunk? TakeSlow(long largeSize)
    {
        ArenaChunk? chunk;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, typeof(RequestArenaPool));
            chunk = _waiting.Count == 0 ? TryTakeChunk(largeSize) : null;
        }

        if (chunk is null)
        {
            CountRefusal();
        }

        return chunk;
    }

    // After a chunk went to the hot slot while the budget was disposed, a spent budget was logged
    // or a rent was waiting (it is handed to the head of the queue): the rare cases that need _lock.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SettleHotChunkSlow()
    {
        lock (_lock)
        {
            _budgetSpentLogged = false;
            if (_disposed)
            {
                while (_hotChunks.TakeAny() is { } hot)
                {
                    _source.Retire(hot);
                }

                return;
            }

            ServeWaiters();
        }
    }

    private void ReturnIdleChunk(ArenaChunk chunk)
    {
        lock (_lock)
        {
            if (_disposed)
            {
                _source.Retire(chunk);
                return;
            }

            _idle.Add(chunk);
            _budgetSpentLogged = false;
            ServeWaiters();
        }
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

    private ArenaChunk? TryTakeChunk(long largeSize)
    {
        lock (_lock)
        {
            // Named after the pool: the budget is a part of it that users never see.
            ObjectDisposedException.ThrowIf(_disposed, typeof(RequestArenaPool));
            if (largeSize != 0)
            {
                return _large.TakeIdle(largeSize) ?? (MakeRoom(largeSize) ? _source.CreateLargeChunk(largeSize) : null);
            }

            if (_hotChunks.TakeAny() is { } hot)
            {
                return hot;
            }

            if (_idle.Count > 0)
            {
                ArenaChunk chunk = _idle[^1];
                _idle.RemoveAt(_idle.Count - 1);
                NoteIdleTaken();
                return chunk;
            }

            return MakeRoom(_source.ChunkSize) ? _source.CreateChunk(MaxChunks) : null;
        }
    }

    // Under _lock: whether a new chunk of size bytes fits the budget, after disposing idle chunks
    // (large ones first, the largest class first, then the coldest pool chunks) if it would not.
    private bool MakeRoom(long size)
    {
        if (size > _options.MemoryBudget)
        {
            return false;
        }

        bool retiredPoolChunks = false;
        while (Committed + size > _options.MemoryBudget)
        {
            if (_large.TakeColdest() is { } large)
            {
                _source.RetireLargeChunk(large);
            }
            else if (_hotChunks.TakeAny() is { } hot)
            {
                _source.Retire(hot);
                retiredPoolChunks = true;
            }
            else if (_idle.Count > 0)
            {
                _source.Retire(_idle[0]);
                _idle.RemoveAt(0);
                NoteIdleTaken();
                retiredPoolChunks = true;
            }
            else
            {
                return false;
            }
        }

        if (retiredPoolChunks)
        {
            _source.ReleaseEmptySegments();
        }

        return true;
    }

    // Under _lock, after a chunk left _idle.
    private void NoteIdleTaken()
    {
        if (_idle.Count < _idleLowWater)
        {
            _idleLowWater = _idle.Count;
        }
    }
}
