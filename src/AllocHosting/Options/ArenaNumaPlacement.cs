namespace AllocHosting;

/// <summary>Where arena memory is placed on a NUMA machine.</summary>
public enum ArenaNumaPlacement
{
    /// <summary>On the node of the thread that first touches it: the thread that starts the request using the chunk (the kernel's local policy). The default.</summary>
    LocalToRequestThread,

    /// <summary>The process's default policy (no system call per mapping).</summary>
    ProcessDefault,

    /// <summary>Pages spread over every node: even bandwidth when requests hop between nodes.</summary>
    Interleave,
}
