namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// Where the kernel should place the pages of a mapping: the mode and node set that
/// <see cref="MemoryMapSource"/> passes to <c>mbind</c> before any page is touched.
/// </summary>
/// <remarks>
/// <para>
/// Immutable and comparable. <see cref="Default"/> (the default) issues no call at all.
/// Where NUMA calls are unavailable (not Linux, an unsupported architecture, or a sandbox that
/// refuses <c>mbind</c>) a source degrades to the default policy and says so
/// (<see cref="MemoryMapSource.NumaPolicyApplied"/>); a policy never makes a mapping crash.
/// </para>
/// <example><code>
/// var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Preferred(NumaNodeSet.Of(1)) });
/// </code></example>
/// </remarks>
public sealed class NumaPolicy : IEquatable<NumaPolicy>
{
    private NumaPolicy(NumaPolicyMode mode, NumaNodeSet nodes)
    {
        Mode = mode;
        Nodes = nodes;
    }

    /// <summary>No range policy (<c>MPOL_DEFAULT</c>); the source makes no <c>mbind</c> call.</summary>
    public static NumaPolicy Default { get; } = new(NumaPolicyMode.Default, NumaNodeSet.Empty);

    /// <summary>Pages on the node of the CPU that first touches them (<c>MPOL_LOCAL</c>).</summary>
    public static NumaPolicy Local { get; } = new(NumaPolicyMode.Local, NumaNodeSet.Empty);

    /// <summary>The policy mode.</summary>
    public NumaPolicyMode Mode { get; }

    /// <summary>The node set; empty for <see cref="Default"/> and <see cref="Local"/>.</summary>
    public NumaNodeSet Nodes { get; }

    /// <summary>
    /// The one node every page of a mapping is meant to be on, when the policy names exactly one
    /// node with <see cref="NumaPolicyMode.Preferred"/> or <see cref="NumaPolicyMode.Bind"/>; otherwise null.
    /// </summary>
    public int? SingleNode =>
        Mode is NumaPolicyMode.Preferred or NumaPolicyMode.Bind && Nodes.Count == 1 && !Nodes.RelativeNodes
            ? Nodes.Nodes[0]
            : null;

    /// <summary>
    /// Prefer the first node of <paramref name="nodes"/> (<c>MPOL_PREFERRED</c>); an empty set means
    /// the faulting CPU's node.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="nodes"/> is null.</exception>
    public static NumaPolicy Preferred(NumaNodeSet nodes)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        return new NumaPolicy(NumaPolicyMode.Preferred, nodes);
    }

    /// <summary>Prefer <paramref name="node"/> (<c>MPOL_PREFERRED</c>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="node"/> is not a valid node id.</exception>
    public static NumaPolicy Preferred(int node) => Preferred(NumaNodeSet.Of(node));

    /// <summary>Take pages only from <paramref name="nodes"/> (<c>MPOL_BIND</c>).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="nodes"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="nodes"/> is empty.</exception>
    public static NumaPolicy Bind(NumaNodeSet nodes) => WithNodes(NumaPolicyMode.Bind, nodes, nameof(nodes));

    /// <summary>Interleave pages over <paramref name="nodes"/> (<c>MPOL_INTERLEAVE</c>).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="nodes"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="nodes"/> is empty.</exception>
    public static NumaPolicy Interleave(NumaNodeSet nodes) => WithNodes(NumaPolicyMode.Interleave, nodes, nameof(nodes));

    /// <summary>A policy as the kernel reports it (no validation: the kernel already accepted it).</summary>
    internal static NumaPolicy FromKernel(NumaPolicyMode mode, NumaNodeSet nodes) => new(mode, nodes);

    /// <summary>The <c>mode</c> argument of <c>mbind</c>: the mode plus the node set's mode flags.</summary>
    internal int KernelMode => (int)Mode | Nodes.ModeFlags;

    /// <inheritdoc />
    public bool Equals(NumaPolicy? other) => other is not null && Mode == other.Mode && Nodes.Equals(other.Nodes);

    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as NumaPolicy);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Mode, Nodes);

    /// <summary>The mode and, when it has one, the node set, such as <c>Bind{0,1}</c>.</summary>
    public override string ToString() => Nodes.IsEmpty ? Mode.ToString() : $"{Mode}{Nodes}";

    private static NumaPolicy WithNodes(NumaPolicyMode mode, NumaNodeSet nodes, string parameterName)
    {
        ArgumentNullException.ThrowIfNull(nodes, parameterName);
        if (nodes.IsEmpty)
        {
            throw new ArgumentException($"A {mode} NUMA policy needs at least one node.", parameterName);
        }

        return new NumaPolicy(mode, nodes);
    }
}
