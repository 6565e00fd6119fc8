using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

// The flow's choice: the switches (Use, UseContext, Restore) and the scopes that undo them, and
// the per-thread cache of the current flow's state that allocation reads.
//
// Threading: a switch changes only the calling flow's AsyncLocal value (and the calling thread's
// cache, through the change notification); the cache is written only on its own thread. The two
// instance-wide hints NoteContext writes (_allFlowsGlobal, _recentContext) are written by any
// thread, each only when it changes, and read racily: a stale read of either costs a check, never
// a wrong answer (see their fields).
public sealed unsafe partial class SwitchableAllocator
{
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

    // The fast path of every read of the flow's choice: a thread-static read and a tag check; the AsyncLocal is read only when another
    // instance (or nobody yet) filled this thread's cache.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private FlowState CurrentState()
    {
        FlowState? state = t_current;
        return state is not null && ReferenceEquals(state.Owner, this) ? state : RefreshCurrentStateSlow();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private FlowState RefreshCurrentStateSlow()
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
