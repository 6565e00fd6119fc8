namespace AllocHosting.Allocators.MemorySources;

/// <summary>One NUMA node: its id and the CPUs that belong to it.</summary>
public sealed class NumaNode
{
    /// <summary>Creates a node description.</summary>
    /// <param name="id">The kernel's node id.</param>
    /// <param name="cpus">The CPU ids of the node, ascending (empty for a memory-only node).</param>
    public NumaNode(int id, IReadOnlyList<int> cpus)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        ArgumentNullException.ThrowIfNull(cpus);
        Id = id;
        Cpus = [.. cpus];
    }

    /// <summary>The kernel's node id.</summary>
    public int Id { get; }

    /// <summary>The CPU ids of the node, ascending (empty for a memory-only node).</summary>
    public IReadOnlyList<int> Cpus { get; }

    /// <summary>The node as <c>node1 [4, 5, 6, 7]</c>.</summary>
    public override string ToString() => $"node{Id} [{string.Join(", ", Cpus)}]";
}
