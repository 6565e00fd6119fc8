using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// One allocator in front of three: a global allocator, a thread-local allocator and the
/// <see cref="ContextAllocator"/> of the current async flow. Each async flow chooses which of them
/// serves its new allocations (<see cref="Use"/>, <see cref="UseContext(ContextAllocator)"/>, <see cref="UseContext(IContextAllocatorSource)"/>); frees and resizes
/// always go to the allocator that owns the block. The seed's
/// <c>GlobalThreadAndCoroutineSwitchableAllocator</c>, with the async flow as the coroutine.
/// Thread-safe.
/// </summary>
/// <remarks>
/// <para>
/// <b>Use.</b> Code that allocates through the switchable allocator does not know where its memory
/// comes from; the code around it decides, with <see langword="using"/> scopes that restore the
/// previous choice on exit, exceptions included:
/// </para>
/// <code>
/// var allocator = new SwitchableAllocator();                      // every flow starts in global mode
/// using var request = ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, 64 * 1024));
/// using (allocator.UseContext(request))                           // this flow now allocates from the request
/// {
///     byte* buffer = allocator.Allocate(1024, 8);                 // from the bump allocator
///     using (allocator.Use(AllocatorKind.Global))                 // switched again, until the scope ends
///     {
///         byte* shared = allocator.Allocate(64, 8);               // from the global allocator
///         allocator.Deallocate(buffer, 1024, 8);                  // still goes back to the bump allocator
///         allocator.Deallocate(shared, 64, 8);
///     }
/// }                                                               // global mode again, even after an exception
/// </code>
/// <para>
/// <b>What flows where.</b> The choice (the kind and the installed context allocator) lives in an
/// <see cref="AsyncLocal{T}"/>, so it flows with the <see cref="ExecutionContext"/>: through
/// <see langword="await"/>, into <see cref="Task.Run(Action)"/> and
/// <see cref="ThreadPool.QueueUserWorkItem(WaitCallback)"/>, but not into
/// <see cref="ThreadPool.UnsafeQueueUserWorkItem(WaitCallback, object?)"/> or work started while flow
/// is suppressed; there, carry it by hand with <see cref="Save"/> and <see cref="Restore"/>. As with
/// every <see cref="AsyncLocal{T}"/>, a switch made inside an <see langword="async"/> method (or a
/// task) is seen by what it awaits and starts, but not by its caller once it returns: a child never
/// changes its parent's choice. The state of a flow is an immutable object replaced on every switch,
/// so flows that inherited the same state never share changes.
/// </para>
/// <para>
/// <b>Cost.</b> The allocation path never reads the <see cref="AsyncLocal{T}"/>: it reads a
/// <c>[ThreadStatic]</c> copy of the current flow's state, which the <see cref="AsyncLocal{T}"/>'s
/// change notification refreshes whenever the thread switches execution context (and on every
/// switch of allocator). The copy is shared by all instances on a thread and tagged with its owner;
/// an instance that finds another's copy reads its <see cref="AsyncLocal{T}"/> once and takes the
/// cache over. Until some flow of the instance leaves plain global mode, allocation skips even that
/// read. The request is validated once, here: the common targets (an untracked
/// <see cref="NativeMemoryAllocator"/>, the <see cref="ThreadLocalAllocator"/>, the bump allocator
/// of a single-threaded short-lived <see cref="ContextAllocator"/>) are called directly on their
/// already-validated paths, inlined. A free reads no per-thread state: it tries the thread-local
/// allocator's page map, then the context allocator installed most recently (a check of its live
/// range), then the owner registry; each gives the same answer as the registry.
/// The thread-static read is the remaining dispatch cost (a few nanoseconds per allocation).
/// </para>
/// <para>
/// <b>Routing by owner</b> (the fix of the seed's W-SW2). <see cref="AllocatorBase.Deallocate"/>,
/// the reallocations, the in-place resizes and <see cref="Owns"/> look the pointer up in the
/// process-wide owner registry (O(1), no lock): context allocators register their region the first
/// time one is installed with <see cref="UseContext(ContextAllocator)"/> and unregister when disposed; the
/// thread-local allocator registers its heaps, and its default fallback (a <see cref="MemoryMapAllocator"/>)
/// its blocks. A registered block goes to its owner
/// whatever the current kind and whichever thread frees it, also when its context allocator is no
/// longer installed. Shrinking goes to the owner's shrinking reallocation (the seed called its
/// growing one, W-SW1). A thread-local allocator's fallback that does not register its blocks is
/// asked about the rest first, when it is not the global allocator (the constructor's remarks give
/// the rule). Everything else goes to the global allocator. When the global allocator can tell its
/// own blocks (a <see cref="NativeMemoryAllocator"/> created with <c>trackOwnership: true</c>, a
/// <see cref="MemoryMapAllocator"/>, a region allocator; see <see cref="RejectsUnownedPointers"/>), a
/// pointer it does not own is rejected with <see cref="ArgumentException"/> ("nobody owns this
/// pointer") before anything is touched. The default global allocator,
/// <see cref="NativeMemoryAllocator.Shared"/>, cannot tell: a pointer nobody owns (memory of a
/// context allocator already disposed, a stray address) is passed to the C runtime's <c>free</c>,
/// which is undefined behaviour exactly as calling <c>free</c> on it directly would be.
/// </para>
/// <para>
/// <b>Exhaustion.</b> By default an allocation fails when the chosen allocator is exhausted (a
/// request that outgrows its context allocator is an error to see, not to hide). With
/// <see cref="FallBackToGlobal"/> set, an allocation or growth that the thread-local or context
/// allocator cannot serve is served by the global allocator instead; such a block then lives
/// until it is freed, not until the context is reset, and routing still finds its owner.
/// </para>
/// <para>
/// <b>Threads.</b> The switchable allocator and its global and thread-local allocators are
/// thread-safe; a <see cref="ContextAllocator"/> is only in its thread-safe forms
/// (<see cref="ContextAllocator.IsThreadSafe"/>). Tasks forked inside a context scope
/// (<see cref="Task.WhenAll(Task[])"/>) share the flow's context allocator: switch them to
/// <see cref="AllocatorKind.ThreadLocal"/> or <see cref="AllocatorKind.Global"/>, give each its
/// own context allocator, or install a thread-safe one, before they allocate concurrently. A context block freed from another
/// thread is freed into the context allocator on that thread, so do it only when the flow that uses
/// the context allocator is not running at the same time.
/// </para>
/// <para>
/// <b>Statistics</b> are the sum of the global allocator's and the thread-local allocator's
/// statistics (the peak is the sum of the two peaks, an upper bound; a global allocator that is
/// also the thread-local allocator's fallback, already in its statistics, is not added twice). These allocators are usually
/// shared with other users, whose traffic is included. Context allocators report their own
/// statistics (<see cref="Context"/>).
/// </para>
/// <para>
/// What it never does: it never disposes the allocators it dispatches to (<see cref="AllocatorBase.Dispose()"/>
/// does nothing, and the allocator stays usable afterwards: it owns no memory, only routes to
/// allocators that usually outlive it, and a host that disposes it at shutdown must not make late
/// frees of its blocks throw), never moves a block between allocators unless <see cref="FallBackToGlobal"/> is set,
/// and never changes the choice of another flow.
/// </para>
/// </remarks>
public sealed unsafe partial class SwitchableAllocator : AllocatorBase
{
    // The current flow's state for the switchable allocator named by its Owner, or null before the
    // thread first asked. Invariant: when t_current.Owner is X, t_current is X's _flow.Value on this
    // thread (or X._globalState when that is null). X's change callback writes it on every change of
    // X's value on this thread; another instance overwrites it only with its own state, which X
    // detects by the Owner tag.
    [ThreadStatic]
    private static FlowState? t_current;

    private readonly IAllocator _global;

    // Typed views of _global and _threadLocal, set when they are of that type, else null. The hot
    // paths call the sealed types directly (devirtualised, inlined) and every AllocatorBase through
    // its "already validated" entry points, so a request is validated once, by this allocator.
    // _plainNativeGlobal: _global when it is an untracked NativeMemoryAllocator (the default).
    private readonly NativeMemoryAllocator? _plainNativeGlobal;
    private readonly AllocatorBase? _globalBase;
    private readonly IAllocator _threadLocal;
    private readonly ThreadLocalAllocator? _slabThreadLocal;
    private readonly AllocatorBase? _threadLocalBase;
    private readonly bool _globalKnowsOwnership;

    // The thread-local allocator's fallback when its blocks are not in the owner registry and it is
    // not the global allocator (it can tell its own blocks, or the constructor refused it); else null.
    // An unregistered pointer it owns is its block, not the global allocator's.
    private readonly IAllocator? _unregisteredFallback;

    // Whether an unregistered pointer needs a check before it goes to the global allocator: the
    // fallback above asked first, or the global allocator rejects what it does not own. False on the
    // common paths (an untracked global, no such fallback), which then pay nothing for either.
    private readonly bool _checksUnregistered;

    // _plainNativeGlobal when an unregistered pointer goes to it without a check; the free fast path.
    private readonly NativeMemoryAllocator? _uncheckedNativeGlobal;

    // A hint for the free path, which reads no thread-static: the state of the latest switch that
    // installed a context allocator (any flow, any thread), or null. Its context allocator is the
    // likely owner of a block being freed; a check of its live range (empty once disposed) gives the
    // same answer as the owner registry, so a stale hint only costs that check. (It keeps that state
    // and its context allocator object reachable until the next installation; Dispose has released
    // the memory regardless.)
    private FlowState? _recentContext;

    // True until some flow of this instance leaves plain global mode (a switch to another kind, a
    // context allocator installed); never set again. While true every flow is in global mode, so
    // allocation skips the thread-static read. Cleared (release) before the state that leaves global
    // mode is published, so a flow that can see such a state also sees the flag cleared.
    private bool _allFlowsGlobal = true;

    // The per-flow choice; null in a flow that never switched (= _globalState).
    private readonly AsyncLocal<FlowState?> _flow;

    // The state of a flow that never switched: global mode, no context allocator.
    private readonly FlowState _globalState;

    /// <summary>Creates a switchable allocator; every flow starts in <see cref="AllocatorKind.Global"/> mode.</summary>
    /// <param name="global">The thread-safe global allocator; <see cref="NativeMemoryAllocator.Shared"/> when null.</param>
    /// <param name="threadLocal">
    /// The thread-safe allocator behind <see cref="AllocatorKind.ThreadLocal"/> mode, which serves each
    /// calling thread from its own heap; <see cref="ThreadLocalAllocator.Shared"/> (NUMA-local per-thread
    /// heaps) when null.
    /// </param>
    /// <remarks>
    /// Frees are routed by address, so every block must be traceable to its allocator. A
    /// <see cref="ThreadLocalAllocator"/> passed as <paramref name="threadLocal"/> hands its over-size
    /// requests to its <see cref="ThreadLocalAllocator.Fallback"/>, which must therefore be one of:
    /// the default (on Linux a <see cref="MemoryMapAllocator"/> that registers its blocks in the owner
    /// registry, so routing finds them at no cost); the <paramref name="global"/> allocator itself
    /// (unregistered pointers go there anyway); or an allocator whose <see cref="IAllocator.Owns"/>
    /// answers exactly for its blocks: a <see cref="MemoryMapAllocator"/>, a
    /// <see cref="NativeMemoryAllocator"/> created with <c>trackOwnership: true</c> (the default
    /// elsewhere), a <see cref="MemoryPoolAllocator"/> or a region allocator. Such a fallback is asked, before the global allocator, about every pointer no
    /// registered allocator owns, which costs its <see cref="IAllocator.Owns"/> call on those frees.
    /// Any other fallback is refused here, since its blocks would be freed into the global allocator.
    /// </remarks>
    /// <exception cref="ArgumentException">
    /// <paramref name="threadLocal"/> is a <see cref="ThreadLocalAllocator"/> whose fallback cannot tell
    /// its own blocks (for example an untracked <see cref="NativeMemoryAllocator"/> other than the
    /// global allocator); the message says what to pass instead.
    /// </exception>
    public SwitchableAllocator(IAllocator? global = null, IAllocator? threadLocal = null)
    {
        _global = global ?? NativeMemoryAllocator.Shared;
        _threadLocal = threadLocal ?? DefaultThreadLocal();
        _globalKnowsOwnership = KnowsItsBlocks(_global);
        _unregisteredFallback = UnregisteredFallbackOf(_threadLocal, _global);
        _checksUnregistered = _globalKnowsOwnership || _unregisteredFallback is not null;
        _plainNativeGlobal = _global is NativeMemoryAllocator { TracksOwnership: false } native ? native : null;
        _uncheckedNativeGlobal = _checksUnregistered ? null : _plainNativeGlobal;
        _globalBase = _global as AllocatorBase;
        _slabThreadLocal = _threadLocal as ThreadLocalAllocator;
        _threadLocalBase = _threadLocal as AllocatorBase;
        _globalState = new FlowState(this, AllocatorKind.Global, null);
        _flow = new AsyncLocal<FlowState?>(OnFlowChanged);
    }

    /// <summary>The global allocator: serves <see cref="AllocatorKind.Global"/> mode and every pointer no other allocator owns.</summary>
    public IAllocator Global => _global;

    /// <summary>The allocator serving <see cref="AllocatorKind.ThreadLocal"/> mode (the constructor's, or <see cref="ThreadLocalAllocator.Shared"/>).</summary>
    public IAllocator ThreadLocal => _threadLocal;

    /// <summary>The context allocator installed in the current async flow, or <see langword="null"/> (also when a <see cref="ContextSource"/> gives it lazily: reading this property never asks the source).</summary>
    public ContextAllocator? Context => CurrentState().Context;

    /// <summary>The source installed in the current async flow with <see cref="UseContext(IContextAllocatorSource)"/>, or <see langword="null"/>.</summary>
    public IContextAllocatorSource? ContextSource => CurrentState().Source;

    /// <summary>Which allocator serves new allocations in the current async flow.</summary>
    public AllocatorKind Current => CurrentState().Kind;

    /// <summary>
    /// Whether an allocation or growth that the thread-local or context allocator cannot serve is
    /// served by the global allocator instead of failing. Off by default (see the type's remarks).
    /// </summary>
    public bool FallBackToGlobal { get; init; }

    /// <summary>
    /// Whether a pointer that no registered allocator owns and the global allocator does not own
    /// either is rejected with <see cref="ArgumentException"/>. True when the global allocator can
    /// tell its own blocks: a tracking <see cref="NativeMemoryAllocator"/>, a
    /// <see cref="MemoryMapAllocator"/>, a <see cref="MemoryPoolAllocator"/> or a region allocator; false for the default
    /// <see cref="NativeMemoryAllocator.Shared"/>.
    /// </summary>
    public bool RejectsUnownedPointers => _globalKnowsOwnership;

    /// <summary>The sum of the global and thread-local allocators' statistics (see the type's remarks).</summary>
    public override AllocatorStatistics Statistics
    {
        get
        {
            AllocatorStatistics global = _global.Statistics;
            if (ReferenceEquals(_threadLocal, _global))
            {
                return global;
            }

            AllocatorStatistics threadLocal = _threadLocal.Statistics;
            if (_slabThreadLocal is not null && ReferenceEquals(_slabThreadLocal.Fallback, _global))
            {
                // The thread-local allocator's statistics already include its fallback's, all but
                // the failures: adding the global allocator's again would count its blocks twice.
                return threadLocal with { FailureCount = threadLocal.FailureCount + global.FailureCount };
            }

            return global + threadLocal;
        }
    }

    /// <summary>Stays usable after <see cref="AllocatorBase.Dispose()"/>, which does nothing: see the type's remarks.</summary>
    protected override bool RemainsUsableAfterDispose => true;

    /// <inheritdoc />
    /// <remarks>
    /// The allocation fast path. Inlined: the sealed common targets (an untracked <see cref="NativeMemoryAllocator"/>, the
    /// <see cref="ThreadLocalAllocator"/>, the bump allocator of a single-threaded short-lived context)
    /// through their already-validated entry points; every other target out of line.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        if (!_allFlowsGlobal)
        {
            FlowState state = CurrentState();
            if (state.Kind != AllocatorKind.Global)
            {
                byte* pointer = state.Kind == AllocatorKind.Context && state.DirectBump is { } bump ? bump.AllocatePrevalidated(size, alignment)
                    : state.Kind == AllocatorKind.ThreadLocal && _slabThreadLocal is { } slab ? slab.AllocatePrevalidated(size, alignment)
                    : AllocateOtherTargetSlow(state, size, alignment);
                return pointer != null || !FallBackToGlobal ? pointer : AllocateFallbackSlow(size, alignment);
            }
        }

        return _plainNativeGlobal is { } native ? native.AllocatePrevalidated(size, alignment) : AllocateGlobalSlow(size, alignment);
    }

    /// <summary>The usable size of the request in the allocator that would serve it now (the current flow's kind).</summary>
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment)
    {
        FlowState state = CurrentState();
        IAllocator allocator = state.Kind switch
        {
            AllocatorKind.Context => ContextOf(state),
            AllocatorKind.ThreadLocal => _threadLocal,
            _ => _global,
        };
        return allocator.GetUsableSize(size, alignment);
    }

    // Where the thread-local allocator comes from when the constructor gets none.
    private static ThreadLocalAllocator DefaultThreadLocal() => ThreadLocalAllocator.Shared;

    // Only allocators whose Owns answers exactly for every block they hand out may reject pointers
    // or claim unregistered ones: an untracked NativeMemoryAllocator says no to everything.
    private static bool KnowsItsBlocks(IAllocator allocator) => allocator switch
    {
        NativeMemoryAllocator native => native.TracksOwnership,
        MemoryMapAllocator or MemoryPoolAllocator or IRegionAllocator => true,
        _ => false,
    };

    // The fallback of a ThreadLocalAllocator that routing must ask about unregistered pointers, or
    // null when it needs no asking (see the constructor's remarks); throws when it cannot be asked.
    private static IAllocator? UnregisteredFallbackOf(IAllocator? threadLocal, IAllocator global)
    {
        if (threadLocal is not ThreadLocalAllocator slab)
        {
            return null;
        }

        IAllocator fallback = slab.Fallback;
        if (fallback is MemoryMapAllocator { RegistersBlocks: true } || ReferenceEquals(fallback, global))
        {
            return null;
        }

        if (!KnowsItsBlocks(fallback))
        {
            throw new ArgumentException(
                $"The thread-local allocator's fallback, a {fallback.GetType().Name}, cannot tell its own blocks, so frees of its over-size blocks through this {nameof(SwitchableAllocator)} would go to the global allocator. " +
                $"Set {nameof(ThreadLocalAllocatorOptions)}.{nameof(ThreadLocalAllocatorOptions.Fallback)} to a {nameof(MemoryMapAllocator)} (or leave it null for the default), to the global allocator itself, " +
                $"or to an allocator that tracks its blocks: new {nameof(NativeMemoryAllocator)}(trackOwnership: true), a {nameof(MemoryPoolAllocator)} or a region allocator.",
                nameof(threadLocal));
        }

        return fallback;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateGlobalSlow(nuint size, nuint alignment) => AllocateFrom(_globalBase, _global, size, alignment);

    // The targets AllocateCore does not inline: context allocators other than a single-threaded bump
    // allocator, thread-local allocators other than ThreadLocalAllocator.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateOtherTargetSlow(FlowState state, nuint size, nuint alignment)
    {
        if (state.Kind != AllocatorKind.Context)
        {
            return AllocateThreadLocal(size, alignment);
        }

        ContextAllocator context = ContextOf(state);
        byte* pointer = context.AllocatePrevalidated(size, alignment);
        if (pointer == null && state.Source?.GetContextAllocatorAfter(context, size, alignment) is { } next && !ReferenceEquals(next, context))
        {
            // The source's allocator is full: it may give a fresh one (a request arena chains a chunk).
            Register(next);
            pointer = next.AllocatePrevalidated(size, alignment);
        }

        if (pointer != null && state.Source is { } source)
        {
            // Asked again after the carve: a source that ended while it ran (a request that ended)
            // throws now, so a block carved in a use that was ending never reaches the caller (its
            // memory goes back with that use).
            source.GetContextAllocator();
        }

        return pointer;
    }

    // The flow's context allocator: the installed one, or the one its source gives now (registered
    // at its first use; registering again is a volatile read).
    private static ContextAllocator ContextOf(FlowState state)
    {
        if (state.Context is { } context)
        {
            return context;
        }

        ContextAllocator given = state.Source!.GetContextAllocator()
            ?? throw new InvalidOperationException($"The {state.Source.GetType().Name} installed as this flow's context allocator source returned null.");
        Register(given);
        return given;
    }

    private byte* AllocateThreadLocal(nuint size, nuint alignment) => AllocateFrom(_threadLocalBase, _threadLocal, size, alignment);

    // A target that is an AllocatorBase (validated: its typed view) is called on its
    // already-validated entry point, since this allocator validated the request; any other
    // IAllocator through TryAllocate.
    private static byte* AllocateFrom(AllocatorBase? validated, IAllocator target, nuint size, nuint alignment)
    {
        if (validated is not null)
        {
            return validated.AllocatePrevalidated(size, alignment);
        }

        target.TryAllocate(size, alignment, out byte* pointer);
        return pointer;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateFallbackSlow(nuint size, nuint alignment)
    {
        _global.TryAllocate(size, alignment, out byte* pointer);
        return pointer;
    }

    private static void Register(ContextAllocator context)
    {
        try
        {
            context.EnsureRegistered();
        }
        catch (InvalidOperationException e) when (e is not ObjectDisposedException)
        {
            throw new InvalidOperationException(
                $"The context allocator's region {context.Range.From:X}..{context.Range.To:X} shares a 4 KiB page with memory of another allocator; frees are routed by page, so give each context allocator page-aligned memory of its own.",
                e);
        }
    }
}
