namespace AllocHosting.Allocators;

/// <summary>
/// What one async flow has chosen in one <see cref="SwitchableAllocator"/>: the kind serving new
/// allocations and the installed context allocator.
/// </summary>
/// <remarks>
/// Immutable: every switch creates a new object, so two flows that inherited the same state never
/// see each other's later changes, and a scope can tell by reference whether the state it installed
/// is still the current one. <see cref="Owner"/> lets the per-thread cache (shared by all
/// instances) say which switchable allocator it belongs to.
/// </remarks>
internal sealed class FlowState(SwitchableAllocator owner, AllocatorKind kind, ContextAllocator? context, IContextAllocatorSource? source = null)
{
    /// <summary>The switchable allocator this state belongs to.</summary>
    public readonly SwitchableAllocator Owner = owner;

    /// <summary>The kind serving new allocations; <see cref="AllocatorKind.Context"/> only when <see cref="Context"/> or <see cref="Source"/> is set.</summary>
    public readonly AllocatorKind Kind = kind;

    /// <summary>The flow's context allocator, or <see langword="null"/> when none is installed or a <see cref="Source"/> gives it.</summary>
    public readonly ContextAllocator? Context = context;

    /// <summary>Where the flow's context allocator comes from when it was installed lazily (then <see cref="Context"/> is null), else <see langword="null"/>.</summary>
    public readonly IContextAllocatorSource? Source = context is null ? source : null;

    /// <summary>Whether the flow has a context allocator, installed or to come from <see cref="Source"/>.</summary>
    public bool HasContext => Context is not null || Source is not null;

    /// <summary>
    /// The bump allocator inside <see cref="Context"/> when that is a single-threaded short-lived
    /// context allocator, else <see langword="null"/>. Such a context allocator only forwards to it
    /// (and reports its statistics), so the switchable allocator may call it directly.
    /// </summary>
    public readonly BumpAllocator? DirectBump =
        context is { Kind: ContextAllocatorKind.ShortLived, IsThreadSafe: false } ? (BumpAllocator)context.Inner : null;
}
