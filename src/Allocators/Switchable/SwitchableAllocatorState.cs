
namespace AllocHosting.Allocators;

/// <summary>
/// A saved allocator state of one async flow in a <see cref="SwitchableAllocator"/>: the installed
/// context allocator and the kind serving new allocations. Obtained from
/// <see cref="SwitchableAllocator.Save"/>, applied with <see cref="SwitchableAllocator.Restore"/>.
/// </summary>
/// <remarks>
/// For code that runs work items without execution-context flow (its own scheduler,
/// <see cref="ThreadPool.UnsafeQueueUserWorkItem(WaitCallback, object?)"/>, suppressed flow): save in
/// the flow that owns the context, restore inside the work item. The default value is the state of a
/// flow that never switched: global mode, no context allocator.
/// </remarks>
public readonly struct SwitchableAllocatorState : IEquatable<SwitchableAllocatorState>
{
    // _owner is null only for default(SwitchableAllocatorState); _flow is null when the saved flow
    // had never switched (global mode, no context).
    private readonly SwitchableAllocator? _owner;
    private readonly FlowState? _flow;

    internal SwitchableAllocatorState(SwitchableAllocator owner, FlowState? flow)
    {
        _owner = owner;
        _flow = flow;
    }

    /// <summary>The kind that served new allocations when the state was saved.</summary>
    public AllocatorKind Kind => _flow?.Kind ?? AllocatorKind.Global;

    /// <summary>The context allocator that was installed when the state was saved, or <see langword="null"/> (also when a <see cref="ContextSource"/> gives it).</summary>
    public ContextAllocator? Context => _flow?.Context;

    /// <summary>The context allocator source that was installed when the state was saved (<see cref="SwitchableAllocator.UseContext(IContextAllocatorSource)"/>), or <see langword="null"/>.</summary>
    public IContextAllocatorSource? ContextSource => _flow?.Source;

    internal SwitchableAllocator? Owner => _owner;

    internal FlowState? Flow => _flow;

    /// <summary>Whether both values are the same saved state of the same switchable allocator.</summary>
    public static bool operator ==(SwitchableAllocatorState left, SwitchableAllocatorState right) => left.Equals(right);

    /// <summary>Whether the values are different saved states.</summary>
    public static bool operator !=(SwitchableAllocatorState left, SwitchableAllocatorState right) => !left.Equals(right);

    /// <inheritdoc />
    public bool Equals(SwitchableAllocatorState other) =>
        ReferenceEquals(_owner, other._owner) && ReferenceEquals(_flow, other._flow);

    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is SwitchableAllocatorState other && Equals(other);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(_owner, _flow);

    /// <inheritdoc />
    public override string ToString() =>
        Context is not null ? $"{Kind}, {Context.Kind} context" : ContextSource is not null ? $"{Kind}, context from a {ContextSource.GetType().Name}" : $"{Kind}";
}
