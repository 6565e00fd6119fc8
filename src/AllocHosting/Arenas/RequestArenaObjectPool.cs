using System.Runtime.CompilerServices;

namespace AllocHosting;

/// <summary>
/// The <see cref="RequestArena"/> objects (no memory of their own), reused across requests so that
/// a request costs no allocation until it rents: a one-slot cache per processor in front of a
/// bounded stack.
/// </summary>
/// <remarks>
/// Threads: any thread may rent and return at any time. The common rent/return pair costs plain
/// loads and stores: each thread keeps one spare arena object (<see cref="t_spare"/>, the pattern of
/// ArrayPool.Shared's thread-local stash), so a request that ends on the thread it started on, or
/// on any thread that returned one before, takes and returns it without a locked instruction.
/// Past that, one uncontended exchange each on the processor's slot; only when that slot is empty
/// or full do they take the stack's lock.
/// <para>
/// Figures: the pool lists the <see cref="RequestArenaFigures"/> of every arena object it made (written
/// with plain stores by the object's requests) and sums them when a metric is read. It holds the
/// objects themselves only weakly, through the figures: an object dropped because the stack is full
/// hands its bytes to a pool total and leaves the list, and so do the figures of an object that was
/// lost with its thread (a thread's spare when the thread ended) once the GC has collected it, at the
/// next read.
/// </para>
/// </remarks>
internal sealed class RequestArenaObjectPool
{
    private const int MaxPooledArenas = 256;

    // The calling thread's spare arena object, of whichever pool returned it last on this thread
    // (a process may hold several pools: a test host each); written only by its thread. An arena
    // there is released and holds no memory.
    [ThreadStatic]
    private static RequestArena? t_spare;

    private readonly RequestArenaPool _owner;
    private readonly Func<RequestArena> _create;

    // Lock-free.
    private readonly ProcessorSlots<RequestArena> _hotArenas = new();

    // Guards _arenas, _arenaCount, _all and _droppedAllocated.
    private readonly Lock _arenaLock = new();
    private readonly RequestArena?[] _arenas = new RequestArena?[MaxPooledArenas];
    private int _arenaCount;

    // The figures of every arena object made and not dropped or collected (each knows its index), and
    // the allocated bytes of the dropped and collected ones.
    private readonly List<RequestArenaFigures> _all = [];
    private long _droppedAllocated;

    /// <summary>A pool of the arena objects of <paramref name="owner"/>, which makes a new one with <paramref name="create"/> when it has none to hand out.</summary>
    public RequestArenaObjectPool(RequestArenaPool owner, Func<RequestArena> create)
    {
        _owner = owner;
        _create = create;
    }

    /// <summary>The processor slot of the calling thread now: a request reads it once, when first needed (<see cref="RequestArena.Slot"/>).</summary>
    public int CurrentIndex => _hotArenas.CurrentIndex;

    /// <summary>How many processor slots there are: every <see cref="CurrentIndex"/> is below it.</summary>
    public int SlotCount => _hotArenas.SlotCount;

    /// <summary>How many arena objects hold memory for a use now (<see cref="RequestArenaFigures.Active"/>): requests and scopes that rented.</summary>
    public long CountActive()
    {
        long active = 0;
        lock (_arenaLock)
        {
            ForgetCollected();
            foreach (RequestArenaFigures figures in _all)
            {
                if (figures.Active)
                {
                    active++;
                }
            }
        }

        return active;
    }

    /// <summary>The bytes rented by every ended use of this pool's arena objects, dropped and collected ones included.</summary>
    public long ReleasedAllocatedBytes
    {
        get
        {
            lock (_arenaLock)
            {
                ForgetCollected();
                long bytes = _droppedAllocated;
                foreach (RequestArenaFigures figures in _all)
                {
                    bytes += figures.ReleasedAllocatedBytes;
                }

                return bytes;
            }
        }
    }

    // Under _arenaLock: the figures of arena objects the GC collected (lost with their thread) move to
    // the pool's total and leave the list, so that the list stays as long as the objects alive.
    private void ForgetCollected()
    {
        for (int i = _all.Count - 1; i >= 0; i--)
        {
            if (!_all[i].Arena.TryGetTarget(out _))
            {
                Unlist(_all[i]);
            }
        }
    }

    // Under _arenaLock: moves the figures' bytes to the pool's total and takes them off the list (the
    // last entry takes their place).
    private void Unlist(RequestArenaFigures figures)
    {
        if (figures.RegistryIndex < 0)
        {
            return;
        }

        _droppedAllocated += figures.ReleasedAllocatedBytes;
        int index = figures.RegistryIndex;
        RequestArenaFigures last = _all[^1];
        _all[index] = last;
        last.RegistryIndex = index;
        _all.RemoveAt(_all.Count - 1);
        figures.RegistryIndex = -1;
    }

    /// <summary>An arena object for a request; the fast path takes the thread's spare, then the one the calling thread's processor slot holds.</summary>
    public RequestArena Rent()
    {
        RequestArena? spare = t_spare;
        if (spare is not null && ReferenceEquals(spare.Pool, _owner))
        {
            t_spare = null;
            return spare;
        }

        return _hotArenas.Take(_hotArenas.CurrentIndex) ?? RentSlow();
    }

    /// <summary>Keeps <paramref name="arena"/> (released) for a later request: as the thread's spare if it has none of this pool, else in its slot if that is free.</summary>
    public void Return(RequestArena arena)
    {
        RequestArena? spare = t_spare;
        if (spare is null || !ReferenceEquals(spare.Pool, _owner))
        {
            t_spare = arena;
            return;
        }

        if (!_hotArenas.TryPut(arena, arena.Slot))
        {
            ReturnSlow(arena);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private RequestArena RentSlow()
    {
        lock (_arenaLock)
        {
            if (_arenaCount > 0)
            {
                RequestArena arena = _arenas[--_arenaCount]!;
                _arenas[_arenaCount] = null;
                return arena;
            }
        }

        RequestArena created = _create();
        lock (_arenaLock)
        {
            created.Figures.RegistryIndex = _all.Count;
            _all.Add(created.Figures);
        }

        return created;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReturnSlow(RequestArena arena)
    {
        lock (_arenaLock)
        {
            if (_arenaCount < _arenas.Length)
            {
                _arenas[_arenaCount++] = arena;
                return;
            }

            // Dropped (released: it holds nothing): its bytes move to the pool's total.
            Unlist(arena.Figures);
        }
    }
}
