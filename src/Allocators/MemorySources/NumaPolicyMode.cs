namespace AllocHosting.Allocators.MemorySources;

/// <summary>The kernel's NUMA memory policy modes, as <c>mbind</c> and <c>get_mempolicy</c> number them.</summary>
public enum NumaPolicyMode
{
    /// <summary>No range policy: the thread's policy applies, then the system default (the faulting CPU's node).</summary>
    Default = 0,

    /// <summary>Try the preferred node first and fall back to others when it is low on memory.</summary>
    Preferred = 1,

    /// <summary>Take pages only from the given nodes.</summary>
    Bind = 2,

    /// <summary>Spread pages round-robin over the given nodes.</summary>
    Interleave = 3,

    /// <summary>Take pages from the faulting CPU's node, falling back when it is low on memory (Linux 3.8 and later).</summary>
    Local = 4,

    /// <summary>Reported by newer kernels for ranges set to <c>MPOL_PREFERRED_MANY</c>; this library never sets it.</summary>
    PreferredMany = 5,

    /// <summary>Reported by newer kernels for ranges set to <c>MPOL_WEIGHTED_INTERLEAVE</c>; this library never sets it.</summary>
    WeightedInterleave = 6,
}
