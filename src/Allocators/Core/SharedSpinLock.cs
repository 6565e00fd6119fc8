namespace AllocHosting.Allocators;

/// <summary>
/// A spin lock that several objects share by reference: an <see cref="ArenaChunk"/> of the bit set
/// kind and its <see cref="ContextAllocator"/> guard the one bit set with it; a request arena guards
/// its chain of chunks with one. The same lock as a
/// <see cref="NumaHeapAllocator"/> heap's (<see cref="NumaHeapSpinLock"/>: one compare-and-swap to take,
/// a plain store to give back, bounded spinning then yielding), in an object of its own.
/// </summary>
/// <remarks>
/// Why not <see cref="Lock"/>: taking and giving back a <see cref="Lock"/> costs two locked
/// instructions and two reads of the thread's id (a thread-static lookup each), 15–16 ns a pair where
/// a locked instruction costs 6 ns, against 6 ns for this lock (issue 12). The price: not reentrant,
/// no owner, no fairness. Only for critical sections that call nothing that could take the lock
/// again and that never wait for other work: the bit set's own operations, and the request arena's
/// chaining, whose longest step is mapping a fresh chunk (a chunk the budget must first free is
/// awaited outside the lock). A waiter spins briefly, then yields its processor.
/// <para>
/// Debug builds (the tests run them) also keep the owning thread, so that a section that takes the
/// lock again on the thread that holds it, which would spin for ever, throws
/// <see cref="LockRecursionException"/> instead.
/// </para>
/// </remarks>
internal sealed class SharedSpinLock
{
    private NumaHeapSpinLock _lock;

#if DEBUG
    // The managed id of the thread that holds the lock; 0 while nobody does.
    private int _owner;
#endif

    /// <summary>Takes the lock, waiting as long as needed. Taking it ends with a successful compare-and-swap, a full fence: no store before it moves after it, no load after it before it (callers rely on this).</summary>
    /// <exception cref="LockRecursionException">Debug builds only: the calling thread holds the lock already.</exception>
    public void Enter()
    {
#if DEBUG
        int current = Environment.CurrentManagedThreadId;
        if (Volatile.Read(ref _owner) == current)
        {
            throw new LockRecursionException("A SharedSpinLock is not reentrant: this thread holds it already, and taking it again would spin for ever.");
        }

        _lock.Enter();
        _owner = current;
#else
        _lock.Enter();
#endif
    }

    /// <summary>Releases the lock; the caller must hold it.</summary>
    public void Exit()
    {
#if DEBUG
        _owner = 0;
#endif
        _lock.Exit();
    }

    /// <summary>Whether some thread holds the lock now (for tests and assertions).</summary>
    public bool IsHeld => _lock.IsHeld;

    /// <summary>Takes the lock until the returned scope is disposed: <c>using (spin.EnterScope()) { … }</c>, as <c>lock</c> is for <see cref="Lock"/>.</summary>
    public Scope EnterScope()
    {
        Enter();
        return new Scope(this);
    }

    /// <summary>A held <see cref="SharedSpinLock"/>; <see cref="Dispose"/> releases it.</summary>
    public readonly ref struct Scope
    {
        private readonly SharedSpinLock _owner;

        internal Scope(SharedSpinLock owner) => _owner = owner;

        /// <summary>Releases the lock.</summary>
        public void Dispose() => _owner.Exit();
    }
}
