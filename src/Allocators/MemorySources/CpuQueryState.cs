namespace AllocHosting.Allocators.MemorySources;

/// <summary>Which kernel call tells a <see cref="NumaTopology"/> the calling thread's CPU.</summary>
internal enum CpuQueryState
{
    /// <summary>Not asked yet.</summary>
    NotProbed = -1,

    /// <summary><c>getcpu</c>, which also gives the node.</summary>
    GetCpu = 0,

    /// <summary><c>sched_getcpu</c> (getcpu was refused or is missing), the node from the CPU-to-node map.</summary>
    SchedGetCpu = 1,

    /// <summary>Neither works; the CPU is unknown.</summary>
    Neither = 2,
}
