
namespace AllocHosting.Allocators;

/// <summary>
/// A switch of the current async flow's allocator state in a <see cref="SwitchableAllocator"/>, undone
/// by <see cref="Dispose"/>: use it with <see langword="using"/> so the previous state comes back even
/// when an exception is thrown (the seed's <c>callback_with_*</c> did not restore on panic, W-SW3).
/// </summary>
/// <remarks>
/// <para>
/// Returned by <see cref="SwitchableAllocator.Use"/> and <see cref="SwitchableAllocator.UseContext(ContextAllocator)"/> (or its lazy overload).
/// Dispose is idempotent (also across copies of the struct). Scopes must be disposed in reverse
/// order of creation and in the flow that created them (the same method, before or after its
/// awaits); disposing a scope whose switch has been overridden by a later scope that is still
/// active throws <see cref="InvalidOperationException"/> and changes nothing.
/// </para>
/// <para>The default value is a scope that does nothing.</para>
/// </remarks>
public struct AllocatorScope : IDisposable, IEquatable<AllocatorScope>
{
    // Null once this copy is disposed (or for default(AllocatorScope)).
    private SwitchableAllocator? _owner;

    // The flow's state before the switch (null: never switched) and the state the switch installed.
    private readonly FlowState? _previous;
    private readonly FlowState? _installed;

    internal AllocatorScope(SwitchableAllocator owner, FlowState? previous, FlowState installed)
    {
        _owner = owner;
        _previous = previous;
        _installed = installed;
    }

    /// <summary>Whether both values are (copies of) the same scope.</summary>
    public static bool operator ==(AllocatorScope left, AllocatorScope right) => left.Equals(right);

    /// <summary>Whether the values are different scopes.</summary>
    public static bool operator !=(AllocatorScope left, AllocatorScope right) => !left.Equals(right);

    /// <summary>Restores the allocator state the flow had before this scope's switch.</summary>
    /// <exception cref="InvalidOperationException">A scope created after this one is still active in this flow (scopes disposed out of order), or the scope is disposed in another flow.</exception>
    public void Dispose()
    {
        SwitchableAllocator? owner = _owner;
        if (owner is null)
        {
            return;
        }

        owner.EndScope(_previous, _installed!);
        _owner = null;
    }

    /// <inheritdoc />
    public readonly bool Equals(AllocatorScope other) =>
        ReferenceEquals(_installed, other._installed) && ReferenceEquals(_previous, other._previous);

    /// <inheritdoc />
    public override readonly bool Equals(object? obj) => obj is AllocatorScope other && Equals(other);

    /// <inheritdoc />
    public override readonly int GetHashCode() => HashCode.Combine(_previous, _installed);
}
