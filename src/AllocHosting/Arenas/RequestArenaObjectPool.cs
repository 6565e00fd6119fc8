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
/// Figures: the pool keeps a list of every arena object it made and has not dropped, so that the
/// figures each object keeps (<see cref="RequestArena.CountedActive"/>,
/// <see cref="RequestArena.ReleasedAllocatedBytes"/>, written with plain stores by its requests)
/// can be summed when a metric is read. An object dropped because the stack is full hands its
/// figure over first.
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

    // Every arena object made and not dropped (each knows its index), and the allocated bytes of the dropped ones.
    private readonly List<RequestArena> _all = [];
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

    /// <summary>How many arena objects hold memory for a use now (<see cref="RequestArena.CountedActive"/>): requests and scopes that rented.</summary>
    public long CountActive()
    {
        long active = 0;
        lock (_arenaLock)
        {
            foreach (RequestArena arena in _all)
            {
                if (arena.CountedActive)
                {
                    active++;
                }
            }
        }

        return active;
    }

    /// <summary>The bytes rented by every ended use of this pool's arena objects, dropped ones included.</summary>
    public long ReleasedAllocatedBytes
    {
        get
        {
            lock (_arenaLock)
            {
                long bytes = _droppedAllocated;
                foreach (RequestArena arena in _all)
                {
                    bytes += arena.ReleasedAllocatedBytes;
                }

                return bytes;
            }
        }
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
            created.RegistryIndex = _all.Count;
            _all.Add(created);
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

            // Dropped (released: it holds nothing): its figure moves to the pool, its place in the list to the last object.
            _droppedAllocated += arena.ReleasedAllocatedBytes;
            int index = arena.RegistryIndex;
            RequestArena last = _all[^1];
            _all[index] = last;
            last.RegistryIndex = index;
            _all.RemoveAt(_all.Count - 1);
            arena.RegistryIndex = -1;
        }
    }
}
