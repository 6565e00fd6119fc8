using AllocHosting.Allocators;
using Microsoft.Extensions.Logging;

namespace AllocHosting;

/// <summary>
/// Keeps the chunks a request released out of use for <c>ReuseDelay</c> before another request may
/// get them, and clears them (by the clear policy) only as they leave, so that a late write through
/// memory of the ended request (work that outlived it and was inside a use of a <c>Span</c> when the
/// request ended) lands in memory nobody uses, and is then cleared, instead of in the next request's
/// memory. A chunk with an outstanding pin (<see cref="ArenaChunk.IsPinned"/>: an asynchronous read
/// or write may still use it) stays out until the pin is released.
/// </summary>
/// <remarks>
/// <para>
/// Order: first in, first out per processor lane, so a chunk leaves no sooner than the delay after
/// it came in. Chunks leave when a later release on the same lane finds them expired (the common
/// case under load: no extra thread), when the pool needs a chunk and its hot slot is empty
/// (<see cref="ReleaseExpired"/>), and on a timer armed only while chunks wait (an idle server wakes
/// up no more than needed to empty the quarantine).
/// </para>
/// <para>
/// What it costs: one lock per release on the request's lane (uncontended unless two requests of
/// one processor slot end at the same instant) and one clock read; the budget counts the chunks
/// inside as in use (they cannot serve anyone), which at <c>R</c> releases per second is about
/// <c>R × ReuseDelay</c> chunks, mostly untouched pages of mapped memory.
/// </para>
/// <para>
/// Threads: <see cref="Add"/> on request flows, <see cref="ReleaseExpired"/> on request flows and
/// the timer, <see cref="Dispose"/> once, at shutdown, before the budget's.
/// </para>
/// </remarks>
internal sealed class ReleasedChunkQuarantine : IDisposable
{
    // How often chunks held only by a pin are looked at again.
    private static readonly TimeSpan PinnedRecheck = TimeSpan.FromMilliseconds(100);

    private readonly TimeProvider _time;
    private readonly long _delayTicks;
    private readonly TimeSpan _delay;
    private readonly bool _clear;
    private readonly bool _protect;   // Diagnostics Guard: chunks are inaccessible while inside
    private readonly Action<ArenaChunk, int> _returnPoolChunk;
    private readonly Action<ArenaChunk> _returnLargeChunk;
    private readonly ILogger _logger;
    private readonly Lane[] _lanes;
    private readonly ITimer _timer;

    // Chunks whose delay passed while they were pinned; under _pinnedLock.
    private readonly List<Entry> _pinned = [];
    private readonly Lock _pinnedLock = new();
    private int _pinnedCount;   // _pinned.Count, also read without the lock

    // 1 while the timer is set to fire; cleared by the timer before it looks at the lanes, so a
    // chunk added meanwhile either is seen by that look or sees the flag clear and sets the timer.
    private int _timerArmed;
    private bool _disposed;
    private long _earlyReuses;   // Interlocked

    public ReleasedChunkQuarantine(
        TimeSpan delay,
        bool clear,
        int lanes,
        TimeProvider time,
        Action<ArenaChunk, int> returnPoolChunk,
        Action<ArenaChunk> returnLargeChunk,
        ILogger logger,
        bool protect = false)
    {
        _protect = protect;
        _time = time;
        _delay = delay;
        // Rounded up: a chunk leaves no sooner than the delay.
        _delayTicks = (long)Math.Ceiling(delay.TotalSeconds * time.TimestampFrequency);
        _clear = clear;
        _returnPoolChunk = returnPoolChunk;
        _returnLargeChunk = returnLargeChunk;
        _logger = logger;
        _lanes = new Lane[lanes];
        for (int i = 0; i < lanes; i++)
        {
            _lanes[i] = new Lane();
        }

        _timer = time.CreateTimer(static state => ((ReleasedChunkQuarantine)state!).OnTimer(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
    }

    /// <summary>Chunks in the quarantine now, pinned ones included (a snapshot).</summary>
    public int Count => Snapshot().Chunks;

    /// <summary>
    /// Chunks in the quarantine now and their bytes at full size, pinned ones included: from the moment
    /// they come in until they are back in the budget (so a figure of the budget read after this one
    /// never counts a chunk on its way back as in use). Lock-free.
    /// </summary>
    public (int Chunks, long Bytes) Snapshot()
    {
        int count = 0;
        long bytes = 0;
        foreach (Lane lane in _lanes)
        {
            count += Volatile.Read(ref lane.Inside);
            bytes += Interlocked.Read(ref lane.InsideBytes);
        }

        return (count, bytes);
    }

    /// <summary>Chunks that left before their delay because the budget was spent (see <see cref="ReleaseOldest"/>).</summary>
    public long EarlyReuses => Interlocked.Read(ref _earlyReuses);

    /// <summary>Chunks kept past their delay because a pin is outstanding (a snapshot).</summary>
    public int PinnedCount
    {
        get
        {
            lock (_pinnedLock)
            {
                return _pinned.Count;
            }
        }
    }

    /// <summary>
    /// Takes a retired chunk (<see cref="ArenaChunk.Retire"/> ran) into the quarantine of lane
    /// <paramref name="slot"/>; a pool chunk (<paramref name="large"/> false) later goes back to that
    /// slot. Chunks of the lane whose delay has passed leave now.
    /// </summary>
    /// <param name="chunk">The retired chunk.</param>
    /// <param name="slot">The processor slot of the request that released it.</param>
    /// <param name="large">Whether it is a large chunk (else a pool chunk).</param>
    /// <param name="bytes">Its size as the budget counts it.</param>
    public void Add(ArenaChunk chunk, int slot, bool large, long bytes)
    {
        if (_protect)
        {
            // Guard: a late access through a kept Span or pointer now crashes (skipped where unsupported).
            chunk.Protect();
        }

        long now = _time.GetTimestamp();
        Lane lane = _lanes[slot];
        Interlocked.Increment(ref lane.Inside);
        Interlocked.Add(ref lane.InsideBytes, bytes);
        Entry expired = default;
        bool disposed;
        lock (lane.Lock)
        {
            disposed = _disposed;
            if (!disposed)
            {
                lane.Queue.Enqueue(new Entry(chunk, slot, large, bytes, now));
                // One expired chunk leaves per release: the lane drains as fast as it fills.
                if (lane.Queue.Peek().ReleasedAt + _delayTicks <= now)
                {
                    expired = lane.Queue.Dequeue();
                }
            }
        }

        if (disposed)
        {
            Leave(new Entry(chunk, slot, large, bytes, now));
            return;
        }

        if (expired.Chunk is not null)
        {
            Leave(expired);
        }

        if (Volatile.Read(ref _timerArmed) == 0)
        {
            ArmTimerSlow(_delay);
        }
    }

    /// <summary>Lets every chunk whose delay has passed leave (and those no longer pinned); returns how many left.</summary>
    public int ReleaseExpired()
    {
        long now = 0;   // read once a lane has a chunk: an empty quarantine costs no clock read
        int left = 0;
        foreach (Lane lane in _lanes)
        {
            // A racy look first (a count read without the lock): an empty lane costs no lock.
            while (lane.Queue.Count > 0)
            {
                if (now == 0)
                {
                    now = _time.GetTimestamp();
                }

                Entry expired;
                lock (lane.Lock)
                {
                    if (lane.Queue.Count == 0 || lane.Queue.Peek().ReleasedAt + _delayTicks > now)
                    {
                        break;
                    }

                    expired = lane.Queue.Dequeue();
                }

                left += Leave(expired) ? 1 : 0;
            }
        }

        return left + ReleaseUnpinned();
    }

    /// <summary>
    /// The budget is spent and nothing else can serve a request: lets the chunk released longest ago
    /// leave before its delay (counted in <see cref="EarlyReuses"/>), so that memory waiting out the
    /// delay never turns into a refused request. Returns whether one left.
    /// </summary>
    /// <param name="slot">The processor slot of the rent that needs the chunk: its own lane's oldest goes first (no scan of the other lanes, which only matter when it is empty).</param>
    public bool ReleaseOldest(int slot)
    {
        while (true)
        {
            Lane? oldest = _lanes[slot].Queue.Count > 0 ? _lanes[slot] : null;
            long oldestAt = long.MaxValue;
            foreach (Lane lane in oldest is null ? _lanes : [])
            {
                if (lane.Queue.Count == 0)
                {
                    continue;   // a racy look, as in ReleaseExpired
                }

                lock (lane.Lock)
                {
                    if (lane.Queue.Count > 0 && lane.Queue.Peek().ReleasedAt < oldestAt)
                    {
                        oldest = lane;
                        oldestAt = lane.Queue.Peek().ReleasedAt;
                    }
                }
            }

            if (oldest is null)
            {
                return ReleaseUnpinned() > 0;
            }

            Entry entry;
            lock (oldest.Lock)
            {
                if (oldest.Queue.Count == 0)
                {
                    continue;   // another thread took it meanwhile: look again
                }

                entry = oldest.Queue.Dequeue();
            }

            bool early = entry.ReleasedAt + _delayTicks > _time.GetTimestamp();
            if (Leave(entry))
            {
                if (early)
                {
                    Interlocked.Increment(ref _earlyReuses);
                }

                return true;
            }
        }
    }

    /// <summary>Lets every chunk leave now, delay or not, except pinned ones (shutdown: the budget disposes what comes back); pinned chunks stay mapped and are logged.</summary>
    public void Dispose()
    {
        _timer.Dispose();
        List<Entry> all = [];
        foreach (Lane lane in _lanes)
        {
            lock (lane.Lock)
            {
                _disposed = true;
                all.AddRange(lane.Queue);
                lane.Queue.Clear();
            }
        }

        foreach (Entry entry in all)
        {
            Leave(entry);
        }

        ReleaseUnpinned();
        int pinned = PinnedCount;
        if (pinned > 0)
        {
            // Unmapping memory an asynchronous operation may still write could crash the process.
            _logger.PinnedChunksKeptAtShutdown(pinned);
        }
    }

    // A chunk whose delay passed: back to the budget (cleared by policy), or to the pinned list.
    private bool Leave(Entry entry)
    {
        if (entry.Chunk.IsPinned)
        {
            lock (_pinnedLock)
            {
                _pinned.Add(entry);
                Volatile.Write(ref _pinnedCount, _pinned.Count);
            }

            return false;
        }

        Return(entry);
        return true;
    }

    private void Return(Entry entry)
    {
        if (_protect)
        {
            entry.Chunk.Unprotect();   // before clearing and before any reuse
        }

        if (_clear)
        {
            entry.Chunk.ClearPending();
        }
        else
        {
            entry.Chunk.DropPending();
        }

        if (entry.Large)
        {
            _returnLargeChunk(entry.Chunk);
        }
        else
        {
            _returnPoolChunk(entry.Chunk, entry.Slot);
        }

        // Counted out only once it is back.
        Lane lane = _lanes[entry.Slot];
        Interlocked.Add(ref lane.InsideBytes, -entry.Bytes);
        Interlocked.Decrement(ref lane.Inside);
    }

    private int ReleaseUnpinned()
    {
        if (Volatile.Read(ref _pinnedCount) == 0)
        {
            return 0;
        }

        List<Entry> unpinned = [];
        lock (_pinnedLock)
        {
            for (int i = _pinned.Count - 1; i >= 0; i--)
            {
                if (!_pinned[i].Chunk.IsPinned)
                {
                    unpinned.Add(_pinned[i]);
                    _pinned.RemoveAt(i);
                }
            }

            Volatile.Write(ref _pinnedCount, _pinned.Count);
        }

        foreach (Entry entry in unpinned)
        {
            Return(entry);
        }

        return unpinned.Count;
    }

    private void ArmTimerSlow(TimeSpan dueTime)
    {
        if (Interlocked.Exchange(ref _timerArmed, 1) == 0)
        {
            try
            {
                _timer.Change(dueTime, Timeout.InfiniteTimeSpan);
            }
            catch (ObjectDisposedException)
            {
                // Shutdown: Dispose lets every chunk leave.
            }
        }
    }

    private void OnTimer()
    {
        Volatile.Write(ref _timerArmed, 0);
        ReleaseExpired();

        // Whatever is still inside (added after the look, or not yet expired) sets the timer again.
        TimeSpan? next = null;
        long now = _time.GetTimestamp();
        foreach (Lane lane in _lanes)
        {
            lock (lane.Lock)
            {
                if (lane.Queue.Count > 0)
                {
                    long due = lane.Queue.Peek().ReleasedAt + _delayTicks - now;
                    TimeSpan wait = due <= 0 ? TimeSpan.FromMilliseconds(1) : TimeSpan.FromSeconds((double)due / _time.TimestampFrequency);
                    next = next is null || wait < next ? wait : next;
                }
            }
        }

        if (next is null && PinnedCount > 0)
        {
            next = PinnedRecheck;
        }

        if (next is { } dueTime && !_disposed)
        {
            ArmTimerSlow(dueTime);
        }
    }

    private readonly record struct Entry(ArenaChunk Chunk, int Slot, bool Large, long Bytes, long ReleasedAt);

    // One processor slot's chunks in release order. Padded so that two lanes' counters (and the
    // lock objects allocated between them) never share a cache line: each lane is written by the
    // requests of its own processor.
    private sealed class Lane
    {
        public readonly Lock Lock = new();
        public readonly Queue<Entry> Queue = new();

        // The lane's chunks and bytes from Add until back in the budget (Interlocked).
        public int Inside;
        public long InsideBytes;

#pragma warning disable IDE0051, CS0169 // never read: it only keeps the next lane's fields off this cache line
        private CacheLine _padding;
#pragma warning restore IDE0051, CS0169
    }

    [System.Runtime.CompilerServices.InlineArray(8)]
    private struct CacheLine
    {
#pragma warning disable IDE0044, IDE0051, CS0169 // the element of an inline array
        private long _element;
#pragma warning restore IDE0044, IDE0051, CS0169
    }
}
