using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;

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
/// thread-safe; a <see cref="ContextAllocator"/> is not. Tasks forked inside a context scope
/// (<see cref="Task.WhenAll(Task[])"/>) share the flow's context allocator: switch them to
/// <see cref="AllocatorKind.ThreadLocal"/> or <see cref="AllocatorKind.Global"/>, or give each its
/// own context allocator, before they allocate concurrently. A context block freed from another
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
/// does nothing), never moves a block between allocators unless <see cref="FallBackToGlobal"/> is set,
/// and never changes the choice of another flow.
/// </para>
/// </remarks>
public sealed unsafe class SwitchableAllocator : AllocatorBase
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

    /// <summary>
    /// Switches the current async flow to <paramref name="kind"/> for new allocations, keeping its
    /// context allocator; disposing the returned scope restores the previous kind.
    /// </summary>
    /// <exception cref="InvalidOperationException"><paramref name="kind"/> is <see cref="AllocatorKind.Context"/> and the flow has no context allocator installed (use <see cref="UseContext(ContextAllocator)"/>).</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="kind"/> is not a defined kind.</exception>
    public AllocatorScope Use(AllocatorKind kind)
    {
        FlowState? previous = _flow.Value;
        switch (kind)
        {
            case AllocatorKind.Global:
                break;
            case AllocatorKind.ThreadLocal:
                break;
            case AllocatorKind.Context:
                if (previous is not { HasContext: true })
                {
                    ThrowNoContext();
                }

                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a defined AllocatorKind.");
        }

        return Switch(previous, new FlowState(this, kind, previous?.Context, previous?.Source));
    }

    /// <summary>
    /// Installs <paramref name="context"/> as the current async flow's context allocator and switches
    /// the flow to <see cref="AllocatorKind.Context"/>; disposing the returned scope restores the
    /// previous context allocator and kind.
    /// </summary>
    /// <remarks>
    /// The first installation registers the context allocator's region in the owner registry (its
    /// <see cref="AllocatorBase.Dispose()"/> unregisters it), so that its blocks are routed back to it
    /// from any flow and thread while it lives. Its region must not share a 4 KiB page with memory of
    /// another registered allocator: regions from <see cref="NativeMemorySource"/>,
    /// <see cref="MemoryMapSource"/> or an <see cref="ArenaMemorySource"/> with page-sized slots never do.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="context"/> is null.</exception>
    /// <exception cref="ObjectDisposedException"><paramref name="context"/> was disposed.</exception>
    /// <exception cref="InvalidOperationException">The context allocator's region shares a page with memory another allocator registered.</exception>
    public AllocatorScope UseContext(ContextAllocator context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Register(context);
        return Switch(_flow.Value, new FlowState(this, AllocatorKind.Context, context));
    }

    /// <summary>
    /// Switches the current async flow to <see cref="AllocatorKind.Context"/> with a context
    /// allocator that <paramref name="source"/> gives when the flow first allocates, not now: a flow
    /// that never allocates through this allocator never asks. Disposing the returned scope
    /// restores the previous context allocator and kind.
    /// </summary>
    /// <remarks>
    /// The source is asked on every allocation and usable-size query of the flow in context mode
    /// (see <see cref="IContextAllocatorSource.GetContextAllocator"/>); each allocator it returns is
    /// registered in the owner registry at its first use, as <see cref="UseContext(ContextAllocator)"/>
    /// does, so frees, resizes and <see cref="Owns"/> find it from any flow. <see cref="Context"/>
    /// stays null for such a flow; <see cref="ContextSource"/> returns the source.
    /// </remarks>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    public AllocatorScope UseContext(IContextAllocatorSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return Switch(_flow.Value, new FlowState(this, AllocatorKind.Context, null, source));
    }

    /// <summary>The current async flow's allocator state (context allocator and kind), to carry into work that does not inherit the flow.</summary>
    public SwitchableAllocatorState Save() => new(this, _flow.Value);

    /// <summary>
    /// Makes <paramref name="state"/> the current async flow's allocator state: typically inside a
    /// work item run without execution-context flow, with a state saved by the flow that scheduled it.
    /// </summary>
    /// <remarks>
    /// Like any switch, it lasts until the flow ends or switches again; a scheduler that runs several
    /// work items on one thread without resetting the execution context should save the state it
    /// finds and restore it after each item. <c>default(SwitchableAllocatorState)</c> is global mode
    /// without a context allocator.
    /// </remarks>
    /// <exception cref="ArgumentException"><paramref name="state"/> was saved from another switchable allocator.</exception>
    public void Restore(SwitchableAllocatorState state)
    {
        if (state.Owner is not null && !ReferenceEquals(state.Owner, this))
        {
            throw new ArgumentException("The state was saved from another SwitchableAllocator; restore it on the instance that saved it.", nameof(state));
        }

        NoteContext(state.Flow);
        _flow.Value = state.Flow;
    }

    /// <summary>
    /// Whether <paramref name="pointer"/> lies in memory an allocator reachable by routing hands out:
    /// a registered allocator (context, thread-local, memory map), the thread-local allocator's
    /// fallback, or the global allocator (which, by default, cannot tell and says no).
    /// </summary>
    public override bool Owns(byte* pointer) => OwnerRegistry.Find((nuint)pointer) is { } owner
        ? owner.Owns(pointer)
        : (_unregisteredFallback?.Owns(pointer) ?? false) || _global.Owns(pointer);

    /// <summary>Ends a scope: restores <paramref name="previous"/> if <paramref name="installed"/> is still the flow's state.</summary>
    internal void EndScope(FlowState? previous, FlowState installed)
    {
        FlowState? current = _flow.Value;
        if (ReferenceEquals(current, installed))
        {
            NoteContext(previous);
            _flow.Value = previous;
        }
        else if (!ReferenceEquals(current, previous))
        {
            // Equal to previous: a copy of this scope was disposed already; nothing to do.
            ThrowScopeOutOfOrder();
        }
    }

    /// <inheritdoc />
    /// <remarks>
    /// Inlined: the sealed common targets (an untracked <see cref="NativeMemoryAllocator"/>, the
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
                    : AllocateOutOfLine(state, size, alignment);
                return pointer != null || !FallBackToGlobal ? pointer : AllocateFallback(size, alignment);
            }
        }

        return _plainNativeGlobal is { } native ? native.AllocatePrevalidated(size, alignment) : AllocateGlobal(size, alignment);
    }

    /// <summary>Frees the block into the allocator that owns it, whatever the current kind.</summary>
    /// <remarks>
    /// The likely owners are asked first, each with a check that gives the same answer as the
    /// owner registry: the thread-local allocator through its page map, then the context allocator
    /// installed most recently through its live range (empty once disposed). The current flow's
    /// state is not read here: a thread-static read costs more than these checks.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        if (_slabThreadLocal is { } slab && SlabPageMap.Find((nuint)pointer) is { } page && page.Allocator == slab)
        {
            // The page is known: the thread-local allocator does not look it up again.
            slab.DeallocateInPage(page, pointer, size);
            return;
        }

        if (_recentContext is { } recent)
        {
            if (recent.DirectBump is { } bump)
            {
                if (bump.Owns(pointer))
                {
                    bump.DeallocatePrevalidated(pointer, size, alignment);
                    return;
                }
            }
            else if (TryDeallocateInContext(recent.Context!, pointer, size, alignment))
            {
                return;
            }
        }

        IAllocator? owner = OwnerRegistry.Find((nuint)pointer);
        if (owner is null && _uncheckedNativeGlobal is { } native)
        {
            native.DeallocatePrevalidated(pointer, size, alignment);
        }
        else
        {
            DeallocateRouted(owner, pointer, size, alignment);
        }
    }

    /// <summary>Grows the block in the allocator that owns it (and, with <see cref="FallBackToGlobal"/>, moves it to the global allocator when the owner cannot).</summary>
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        IAllocator owner = OwnerOf(pointer);
        if (owner.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out byte* grown))
        {
            return grown;
        }

        return FallBackToGlobal && !ReferenceEquals(owner, _global)
            ? MoveToGlobal(owner, pointer, currentSize, newSize, alignment)
            : null;
    }

    /// <summary>Shrinks the block with the shrinking reallocation of the allocator that owns it (W-SW1).</summary>
    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        OwnerOf(pointer).ShrinkingReallocate(pointer, currentSize, newSize, alignment);

    /// <inheritdoc />
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        OwnerOf(pointer).TryGrowInPlace(pointer, currentSize, newSize, alignment);

    /// <inheritdoc />
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        OwnerOf(pointer).TryShrinkInPlace(pointer, currentSize, newSize, alignment);

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

    // The fast path: a thread-static read and a tag check; the AsyncLocal is read only when another
    // instance (or nobody yet) filled this thread's cache.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private FlowState CurrentState()
    {
        FlowState? state = t_current;
        return state is not null && ReferenceEquals(state.Owner, this) ? state : RefreshCurrentState();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private FlowState RefreshCurrentState()
    {
        FlowState state = _flow.Value ?? _globalState;
        t_current = state;
        return state;
    }

    // Runs on the thread whose view of _flow changed: when this code sets it, and when the thread
    // switches to an execution context where it has another value (await continuations, thread
    // pool items, the pool's reset to the default context after an item).
    private void OnFlowChanged(AsyncLocalValueChangedArgs<FlowState?> args) =>
        t_current = args.CurrentValue ?? _globalState;

    // The free path's check of a context allocator that is not a plain bump allocator.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool TryDeallocateInContext(ContextAllocator context, byte* pointer, nuint size, nuint alignment)
    {
        MemoryRange range = context.Range;
        if ((nuint)pointer - range.From >= range.Length)
        {
            return false;
        }

        context.DeallocatePrevalidated(pointer, size, alignment);
        return true;
    }

    private AllocatorScope Switch(FlowState? previous, FlowState next)
    {
        NoteContext(next);
        _flow.Value = next;
        return new AllocatorScope(this, previous, next);
    }

    // Called before a state is installed: clears _allFlowsGlobal when the state leaves plain global
    // mode, and points the free path's hint at a state that carries a context allocator. Both are
    // written only when they change, so that flows sharing one context do not keep dirtying the
    // cache line.
    private void NoteContext(FlowState? state)
    {
        if (_allFlowsGlobal && state is not null && (state.Kind != AllocatorKind.Global || state.HasContext))
        {
            Volatile.Write(ref _allFlowsGlobal, false);
        }

        if (state?.Context is { } context && !ReferenceEquals(_recentContext?.Context, context))
        {
            _recentContext = state;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateGlobal(nuint size, nuint alignment)
    {
        if (_globalBase is { } global)
        {
            return global.AllocatePrevalidated(size, alignment);
        }

        _global.TryAllocate(size, alignment, out byte* pointer);
        return pointer;
    }

    // The targets AllocateCore does not inline: context allocators other than a single-threaded bump
    // allocator, thread-local allocators other than ThreadLocalAllocator.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateOutOfLine(FlowState state, nuint size, nuint alignment)
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

    private byte* AllocateThreadLocal(nuint size, nuint alignment)
    {
        if (_threadLocalBase is { } threadLocal)
        {
            return threadLocal.AllocatePrevalidated(size, alignment);
        }

        _threadLocal.TryAllocate(size, alignment, out byte* pointer);
        return pointer;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void DeallocateRouted(IAllocator? owner, byte* pointer, nuint size, nuint alignment)
    {
        IAllocator target = Route(owner, pointer);
        if (target is AllocatorBase validatedByUs)
        {
            validatedByUs.DeallocatePrevalidated(pointer, size, alignment);
        }
        else
        {
            target.Deallocate(pointer, size, alignment);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateFallback(nuint size, nuint alignment)
    {
        _global.TryAllocate(size, alignment, out byte* pointer);
        return pointer;
    }

    private byte* MoveToGlobal(IAllocator owner, byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (!_global.TryAllocate(newSize, alignment, out byte* moved))
        {
            return null;
        }

        NativeMemory.Copy(pointer, moved, currentSize);
        owner.Deallocate(pointer, currentSize, alignment);
        return moved;
    }

    // Routing: a registered pointer goes to its owner (a context allocator, the thread-local
    // allocator for its segments, a memory map allocator for its mappings). An unregistered one goes
    // to the thread-local allocator's unregistered fallback when that owns it, else to the global
    // allocator, which must own it when it can tell.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private IAllocator OwnerOf(byte* pointer) => Route(OwnerRegistry.Find((nuint)pointer), pointer);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private IAllocator Route(IAllocator? owner, byte* pointer) =>
        owner ?? (_checksUnregistered ? CheckedUnregisteredOwner(pointer) : _global);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private IAllocator CheckedUnregisteredOwner(byte* pointer)
    {
        if (_unregisteredFallback is { } fallback && fallback.Owns(pointer))
        {
            return fallback;
        }

        if (_globalKnowsOwnership && !_global.Owns(pointer))
        {
            ThrowNobodyOwns(pointer);
        }

        return _global;
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

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNobodyOwns(byte* pointer) =>
        throw new ArgumentException(
            $"Nobody owns this pointer (0x{(nuint)pointer:X}): no registered allocator covers it and the global {_global.GetType().Name} did not allocate it (or it was already freed, or its context allocator was disposed).",
            nameof(pointer));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNoContext() =>
        throw new InvalidOperationException(
            "No context allocator is installed in this async flow, so it cannot switch to AllocatorKind.Context; install one with UseContext(allocator) or UseContext(source).");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowScopeOutOfOrder() =>
        throw new InvalidOperationException(
            "An AllocatorScope was disposed while a scope created after it is still active in this flow (or in another flow than the one that created it); dispose scopes in reverse order, ideally with using.");
}
