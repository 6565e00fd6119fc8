using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The counters of a thread-safe allocator that any thread may allocate from and free into, kept
/// per thread with plain (not interlocked) writes and summed on read: the fast path of an
/// allocation or a free is one thread-static load and two or three additions to the calling
/// thread's own cell, with no locked instruction and no cache line shared with another thread.
/// </summary>
/// <remarks>
/// <para>
/// Why not <see cref="AtomicAllocatorCounters"/>: its per-processor stripes take one interlocked
/// update per counter (five per alloc+free pair) and a read of the processor id. Where a locked
/// instruction costs 6 ns that made <see cref="NativeMemoryAllocator.Shared"/> 5.7× slower than the
/// <c>malloc</c>/<c>free</c> it wraps (issue 12). Per thread, each counter has exactly one writer,
/// so a plain addition is exact and a reader's <see cref="Volatile"/> read sees some recent value.
/// </para>
/// <para>
/// Threads: a thread finds its cell through the thread-static cell it used last (checked against the
/// owner), then a small direct-mapped thread-static cache (indexed by this instance's slot, checked
/// against the owner); on a miss (first use, or another instance in
/// the same slot) it looks its cell up, or creates and registers it, under <c>_lock</c>. Readers
/// take a snapshot of the registered cells (an array replaced, never modified, under the lock) and
/// sum them. A block allocated on one thread and freed on another adds to the first cell's bytes in
/// use and subtracts from the second's; only the sum means anything. Cells of threads that have
/// exited are folded into the retired totals when the next cell is registered, so the list holds the
/// live threads that used the allocator and the ones that exited since the last registration.
/// </para>
/// <para>
/// The peak: while a single thread has made every update it is exact (that cell's own high); once
/// several have, it is the largest bytes-in-use seen by a read of <see cref="ToStatistics"/> or sampled
/// whenever a cell's high doubles, as <see cref="AtomicAllocatorCounters"/> does: an exact peak of a
/// sum that many threads change at once would need one shared cache line again. The counts are
/// 64-bit fields read without tearing on 64-bit platforms, the only ones the suite supports.
/// </para>
/// </remarks>
internal sealed class ThreadAllocatorCounters
{
    // Entries of the thread-static cache (a power of two): instances created one after the other
    // get different slots, so a thread alternating between up to this many allocators never misses.
    private const int CacheSize = 8;

    [ThreadStatic]
    private static Cell?[]? t_cache;

    // The cell the thread used last, of whichever instance: one load and an owner check on the fast
    // path; the direct-mapped cache serves a thread that alternates between instances.
    [ThreadStatic]
    private static Cell? t_last;

    private static int s_nextSlot;

    private readonly int _slot = (Interlocked.Increment(ref s_nextSlot) - 1) & (CacheSize - 1);

    // Registration of cells and the retired totals; never taken on a fast path.
    private readonly Lock _lock = new();

    // The registered cells: replaced under _lock, read lock-free.
    private Cell[] _cells = [];

    // Counts of the cells of exited threads, folded in under _lock.
    private Totals _retired;

    // Whether more than one cell was ever registered (the peak is then sampled, not exact).
    private volatile bool _severalThreads;

    // The largest bytes-in-use seen by a read or a sample, or handed over by the first cell when a second one came.
    private long _observedPeak;

    /// <summary>Cells registered now: the live threads that used these counters and those that exited since the last registration (for tests).</summary>
    internal int RegisteredCellCount => Volatile.Read(ref _cells).Length;

    /// <summary>Records an allocation of <paramref name="requested"/> bytes that took <paramref name="accounted"/> bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Allocated(nuint requested, nuint accounted)
    {
        Cell cell = Mine();
        cell.Counts.AllocationCount++;
        cell.Counts.TotalBytesAllocated += (long)requested;
        AddInUse(cell, (long)accounted);
    }

    /// <summary>Records a free that gave <paramref name="accounted"/> bytes back.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Freed(nuint accounted)
    {
        Cell cell = Mine();
        cell.Counts.DeallocationCount++;
        cell.Counts.BytesInUse -= (long)accounted;
    }

    /// <summary>Records a reallocation that moved a block: one more allocation of <paramref name="newRequested"/> bytes and one more free.</summary>
    public void Moved(nuint newRequested)
    {
        Cell cell = Mine();
        cell.Counts.AllocationCount++;
        cell.Counts.DeallocationCount++;
        cell.Counts.TotalBytesAllocated += (long)newRequested;
    }

    /// <summary>Changes the bytes in use by <paramref name="delta"/>.</summary>
    public void Resized(long delta) => AddInUse(Mine(), delta);

    /// <summary>The sum of every thread's counters (approximate while threads run: each cell is read as it is at that moment).</summary>
    public AllocatorStatistics ToStatistics(long? capacity, long failures)
    {
        Totals sum;
        long singlePeak = 0;
        Cell[] cells;
        lock (_lock)
        {
            sum = _retired;
            cells = _cells;
        }

        foreach (Cell cell in cells)
        {
            sum.BytesInUse += Volatile.Read(ref cell.Counts.BytesInUse);
            sum.AllocationCount += Volatile.Read(ref cell.Counts.AllocationCount);
            sum.DeallocationCount += Volatile.Read(ref cell.Counts.DeallocationCount);
            sum.TotalBytesAllocated += Volatile.Read(ref cell.Counts.TotalBytesAllocated);
            singlePeak = Math.Max(singlePeak, Volatile.Read(ref cell.Counts.Peak));
        }

        long peak = _severalThreads ? AtomicAllocatorCounters.RaiseToAtLeast(ref _observedPeak, sum.BytesInUse) : singlePeak;
        return new AllocatorStatistics(
            sum.BytesInUse, Math.Max(peak, sum.BytesInUse), capacity, sum.AllocationCount, sum.DeallocationCount, failures, sum.TotalBytesAllocated);
    }

    // The calling thread's cell: one thread-static load and an owner check.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Cell Mine()
    {
        Cell? last = t_last;
        return last is not null && last.Owner == this ? last : MineSlow();
    }

    // Another instance was used last: the direct-mapped cache, else the registered cells.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private Cell MineSlow()
    {
        Cell?[]? cached = t_cache;
        if (cached is not null && cached[_slot] is { } hit && hit.Owner == this)
        {
            return t_last = hit;
        }

        return t_last = RegisterSlow();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private Cell RegisterSlow()
    {
        Cell?[] cache = t_cache ??= new Cell?[CacheSize];
        Thread current = Thread.CurrentThread;
        lock (_lock)
        {
            Cell? cell = Array.Find(_cells, c => c.Thread == current);
            if (cell is null)
            {
                cell = new Cell(this, current);
                Register(cell);
            }

            cache[_slot] = cell;
            return cell;
        }
    }

    // Under _lock: adds a new thread's cell and folds the cells of exited threads into the retired totals.
    private void Register(Cell cell)
    {
        var cells = new List<Cell>(_cells.Length + 1);
        foreach (Cell existing in _cells)
        {
            if (existing.Thread.IsAlive)
            {
                cells.Add(existing);
                continue;
            }

            // The thread exited: its cell gets no more writes. Its peak is kept in the observed peak.
            _retired.BytesInUse += Volatile.Read(ref existing.Counts.BytesInUse);
            _retired.AllocationCount += Volatile.Read(ref existing.Counts.AllocationCount);
            _retired.DeallocationCount += Volatile.Read(ref existing.Counts.DeallocationCount);
            _retired.TotalBytesAllocated += Volatile.Read(ref existing.Counts.TotalBytesAllocated);
            AtomicAllocatorCounters.RaiseToAtLeast(ref _observedPeak, Volatile.Read(ref existing.Counts.Peak));
        }

        if (!_severalThreads && _cells.Length > 0)
        {
            // The single-thread period ends: its exact peak becomes the observed peak reads raise from now on.
            foreach (Cell first in _cells)
            {
                AtomicAllocatorCounters.RaiseToAtLeast(ref _observedPeak, Volatile.Read(ref first.Counts.Peak));
            }

            _severalThreads = true;
        }

        cells.Add(cell);
        Volatile.Write(ref _cells, [.. cells]);
    }

    // The cell's own high is kept up to date (it is the exact peak while only one thread updates);
    // when it doubles while several threads update, the sum of all cells is sampled into the
    // observed peak: only at doublings, so that a thread that allocates what others free (and so
    // sets a new high of its own cell on every allocation) does not read every cell every time.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void AddInUse(Cell cell, long delta)
    {
        long inUse = cell.Counts.BytesInUse += delta;
        if (inUse > cell.Counts.Peak)
        {
            cell.Counts.Peak = inUse;
            if (inUse >= cell.Counts.NextSample && _severalThreads)
            {
                SamplePeakSlow(cell, inUse);
            }
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SamplePeakSlow(Cell cell, long inUse)
    {
        cell.Counts.NextSample = inUse * 2;
        long sum;
        Cell[] cells;
        lock (_lock)
        {
            // Together: a cell folded into the retired totals is in exactly one of the two.
            sum = _retired.BytesInUse;
            cells = _cells;
        }

        foreach (Cell other in cells)
        {
            sum += Volatile.Read(ref other.Counts.BytesInUse);
        }

        AtomicAllocatorCounters.RaiseToAtLeast(ref _observedPeak, sum);
    }

    // What a cell counts, and the retired totals (which use the first four fields).
    private struct Totals
    {
        public long BytesInUse;

        public long AllocationCount;

        public long DeallocationCount;

        public long TotalBytesAllocated;

        public long Peak;

        // The cell high at which the sum of all cells is next sampled into the observed peak.
        public long NextSample;
    }

    // One thread's counters, written by that thread only. Padded on both sides: the GC may place
    // cells of different threads (or objects other threads write) next to each other.
    private sealed class Cell(ThreadAllocatorCounters owner, Thread thread)
    {
        public readonly ThreadAllocatorCounters Owner = owner;

        public readonly Thread Thread = thread;

        public CacheLinePadded<Totals> Padded;

        public ref Totals Counts
        {
            [MethodImpl(MethodImplOptions.AggressiveInlining)]
            get => ref Padded.Value;
        }
    }
}
