namespace AllocHosting;

/// <summary>Which allocator carves a request's arena.</summary>
public enum RequestArenaKind
{
    /// <summary>Bump allocation: the fastest; renting from several tasks of a request is lock-free. The default.</summary>
    Bump,

    /// <summary>Bit set allocation over fixed-size blocks: renting takes a short lock; block rounding costs some space.</summary>
    BitSet,
}

/// <summary>What a rent does when the request's arena has reached <see cref="SwitchableAllocatorOptions.MaxArenaSizePerRequest"/> (or the rent is larger than one chunk).</summary>
public enum ArenaOverflowPolicy
{
    /// <summary>Serve the rent from the process allocator (native memory outside the arena budget), tracked and freed when the request ends. The default.</summary>
    FallBack,

    /// <summary>Refuse the rent with an <see cref="InsufficientMemoryException"/>.</summary>
    Fail,
}

/// <summary>What happens to the bytes a request used when its arena is released.</summary>
public enum ArenaClearPolicy
{
    /// <summary>Zero the bytes the request may have written (its high-water mark) so the next request never sees them. The default.</summary>
    ClearUsed,

    /// <summary>Leave them: faster, but the next request's buffers start with this request's bytes.</summary>
    None,
}

/// <summary>What a rent does when the process-wide arena budget (<see cref="SwitchableAllocatorOptions.MemoryBudget"/>) is spent.</summary>
public enum ArenaBudgetPolicy
{
    /// <summary>Wait up to <see cref="SwitchableAllocatorOptions.BudgetWaitTimeout"/> for another request to give a chunk back, then reject. The default.</summary>
    Wait,

    /// <summary>Reject at once: the request ends with 503 Service Unavailable and a Retry-After header.</summary>
    Reject,
}

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

/// <summary>
/// Options of <c>AddSwitchableAllocators</c>: the request arenas, their budget and the
/// metrics and health figures. Bound from the configuration section
/// <see cref="SectionName"/> and validated at start-up.
/// </summary>
/// <remarks>
/// <para>
/// A request's arena is a chain of chunks of <see cref="InitialArenaSize"/> bytes taken lazily
/// (a request that never rents takes none), up to <see cref="MaxArenaSizePerRequest"/>; then
/// <see cref="OverflowPolicy"/> applies. Chunks come from a process-wide pool of at most
/// <see cref="MemoryBudget"/> bytes that keeps idle chunks warm (last in, first out) and gives
/// memory back to the operating system after <see cref="IdleTrimInterval"/> of low use.
/// </para>
/// <code>
/// "SwitchableAllocators": { "ArenaKind": "Bump", "InitialArenaSize": 65536, "MemoryBudget": 268435456, "BudgetPolicy": "Reject" }
/// </code>
/// </remarks>
public sealed class SwitchableAllocatorOptions
{
    /// <summary>The configuration section the options bind from.</summary>
    public const string SectionName = "SwitchableAllocators";

    /// <summary>Which allocator carves request arenas. Default <see cref="RequestArenaKind.Bump"/>.</summary>
    public RequestArenaKind ArenaKind { get; set; } = RequestArenaKind.Bump;

    /// <summary>Block size of bit set arenas in bytes: a power of two from 8 to 4096. Default 64.</summary>
    public int BitSetBlockSize { get; set; } = 64;

    /// <summary>Bytes of one arena chunk, the first a request gets: a multiple of 4096 from 4 KiB to 64 MiB. Default 64 KiB.</summary>
    public int InitialArenaSize { get; set; } = 64 * 1024;

    /// <summary>The most arena memory one request may chain, in bytes: from <see cref="InitialArenaSize"/> to <see cref="MemoryBudget"/>. Default 1 MiB.</summary>
    public long MaxArenaSizePerRequest { get; set; } = 1024 * 1024;

    /// <summary>What happens beyond <see cref="MaxArenaSizePerRequest"/>. Default <see cref="ArenaOverflowPolicy.FallBack"/>.</summary>
    public ArenaOverflowPolicy OverflowPolicy { get; set; } = ArenaOverflowPolicy.FallBack;

    /// <summary>Whether the bytes a request used are cleared when its arena is released. Default <see cref="ArenaClearPolicy.ClearUsed"/>.</summary>
    public ArenaClearPolicy ClearPolicy { get; set; } = ArenaClearPolicy.ClearUsed;

    /// <summary>The most memory all request arenas of the process may hold, in bytes: from <see cref="InitialArenaSize"/> to 64 GiB. Default 256 MiB.</summary>
    public long MemoryBudget { get; set; } = 256L * 1024 * 1024;

    /// <summary>What a rent does when the budget is spent. Default <see cref="ArenaBudgetPolicy.Wait"/>.</summary>
    public ArenaBudgetPolicy BudgetPolicy { get; set; } = ArenaBudgetPolicy.Wait;

    /// <summary>How long a rent waits for a chunk under <see cref="ArenaBudgetPolicy.Wait"/> before the request is rejected: from 0 to 10 seconds. Default 100 ms.</summary>
    public TimeSpan BudgetWaitTimeout { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>The Retry-After a rejected request is told: whole seconds from 1 to 3600. Default 1 second.</summary>
    public TimeSpan RetryAfter { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Where arena memory is placed on NUMA machines. Default <see cref="ArenaNumaPlacement.LocalToRequestThread"/>.</summary>
    public ArenaNumaPlacement NumaPlacement { get; set; } = ArenaNumaPlacement.LocalToRequestThread;

    /// <summary>How often idle chunks are trimmed: chunks that stayed idle for a whole interval go back to the operating system. From 1 second to 1 day. Default 30 seconds.</summary>
    public TimeSpan IdleTrimInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Whether the middleware installs each request's arena as the context allocator of the
    /// request's async flow in the registered <see cref="Allocators.SwitchableAllocator"/> (and
    /// switches the flow to context mode), so that code allocating through the switchable
    /// allocator during the request is served from the arena and released with it. The arena is
    /// installed lazily (<see cref="Allocators.SwitchableAllocator.UseContext(Allocators.IContextAllocatorSource)"/>):
    /// it takes memory only when the request first allocates. Off by default because installing
    /// changes the flow's <c>AsyncLocal</c> state, which costs every request a few small
    /// allocations and about 100 ns, for code most applications do not have
    /// (<see cref="IRequestBuffers"/> works either way). Default <see langword="false"/>.
    /// </summary>
    public bool InstallContextAllocator { get; set; }

    /// <summary>The share of the budget in use from which the health check reports Degraded: above 0 and at most 1. Default 0.9.</summary>
    public double HealthDegradedRatio { get; set; } = 0.9;
}
