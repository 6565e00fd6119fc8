namespace AllocHosting;

/// <summary>
/// Options of <c>AddSwitchableAllocators</c>: the request arenas, their budget and the
/// metrics and health figures. Bound from the configuration section
/// <see cref="SectionName"/> and validated at start-up.
/// </summary>
/// <remarks>
/// <para>
/// A request's arena is a chain of chunks of <see cref="InitialArenaSize"/> bytes taken lazily
/// (a request that never rents takes none), plus large chunks for rents bigger than a chunk (size
/// classes of 2, 4, 8, … chunks up to the first that holds <see cref="MaxArenaSizePerRequest"/>;
/// an exact, unpooled chunk beyond), up to <see cref="MaxArenaSizePerRequest"/> in all; then
/// <see cref="OverflowPolicy"/> applies. Every chunk comes from a process-wide pool of at most
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

    // The allowed ranges, which the property docs cite and the validator enforces and reports.

    /// <summary>The smallest <see cref="BitSetBlockSize"/>: 8 bytes.</summary>
    public const int MinBitSetBlockSize = 8;

    /// <summary>The largest <see cref="BitSetBlockSize"/>: 4096 bytes.</summary>
    public const int MaxBitSetBlockSize = 4096;

    /// <summary>What <see cref="InitialArenaSize"/> is a multiple of, and its smallest value: 4096 bytes (a page).</summary>
    public const int ArenaSizeUnit = 4096;

    /// <summary>The largest <see cref="InitialArenaSize"/>: 64 MiB.</summary>
    public const int MaxInitialArenaSize = 64 * 1024 * 1024;

    /// <summary>The largest <see cref="MemoryBudget"/>: 64 GiB.</summary>
    public const long MaxMemoryBudget = 64L * 1024 * 1024 * 1024;

    /// <summary>The longest <see cref="BudgetWaitTimeout"/>: 10 seconds.</summary>
    public static readonly TimeSpan MaxBudgetWaitTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The largest <see cref="BudgetQueueLimit"/>: 1 048 576 waiting rents.</summary>
    public const int MaxBudgetQueueLimit = 1024 * 1024;

    /// <summary>The shortest <see cref="RetryAfter"/>: 1 second.</summary>
    public static readonly TimeSpan MinRetryAfter = TimeSpan.FromSeconds(1);

    /// <summary>The longest <see cref="RetryAfter"/>: 1 hour.</summary>
    public static readonly TimeSpan MaxRetryAfter = TimeSpan.FromHours(1);

    /// <summary>The longest <see cref="ReuseDelay"/>: 10 seconds.</summary>
    public static readonly TimeSpan MaxReuseDelay = TimeSpan.FromSeconds(10);

    /// <summary>The shortest wait of a released chunk before reuse under <see cref="ArenaDiagnostics.Guard"/>, whatever <see cref="ReuseDelay"/> says: 100 ms.</summary>
    public static readonly TimeSpan MinGuardReuseDelay = TimeSpan.FromMilliseconds(100);

    /// <summary>The shortest <see cref="IdleTrimInterval"/>: 1 second.</summary>
    public static readonly TimeSpan MinIdleTrimInterval = TimeSpan.FromSeconds(1);

    /// <summary>The longest <see cref="IdleTrimInterval"/>: 1 day.</summary>
    public static readonly TimeSpan MaxIdleTrimInterval = TimeSpan.FromDays(1);

    /// <summary>
    /// Which allocator serves the registered <see cref="Allocators.SwitchableAllocator"/>'s global mode
    /// (requests outside any arena): the process allocator, a native library loaded beside it
    /// (mimalloc, jemalloc, rpmalloc), or the suite's NUMA heap allocator
    /// (<see cref="Allocators.NumaHeapAllocator.Shared"/>). A library that cannot be loaded stops start-up, naming it.
    /// Default <see cref="GlobalAllocatorKind.Process"/>.
    /// </summary>
    public GlobalAllocatorKind GlobalAllocator { get; set; } = GlobalAllocatorKind.Process;

    /// <summary>Which allocator carves request arenas. Default <see cref="RequestArenaKind.Bump"/>.</summary>
    public RequestArenaKind ArenaKind { get; set; } = RequestArenaKind.Bump;

    /// <summary>Block size of bit set arenas in bytes: a power of two from <see cref="MinBitSetBlockSize"/> to <see cref="MaxBitSetBlockSize"/>. Default 64.</summary>
    public int BitSetBlockSize { get; set; } = 64;

    /// <summary>Bytes of one arena chunk, the first a request gets: a multiple of <see cref="ArenaSizeUnit"/> from <see cref="ArenaSizeUnit"/> to <see cref="MaxInitialArenaSize"/>. Default 64 KiB.</summary>
    public int InitialArenaSize { get; set; } = 64 * 1024;

    /// <summary>The most arena memory one request may hold (pool chunks and large chunks at their full sizes) before <see cref="OverflowPolicy"/> applies, in bytes: from <see cref="InitialArenaSize"/> to <see cref="MemoryBudget"/>; it also sets the largest pooled size class of large chunks. Default 1 MiB.</summary>
    public long MaxArenaSizePerRequest { get; set; } = 1024 * 1024;

    /// <summary>
    /// Whether each endpoint's first chunk follows what its requests use: the 90th percentile of its
    /// recent requests' used bytes, rounded up to a power of two and then to a size class (a pool
    /// chunk when that fits, else the smallest large-chunk class that holds it, never beyond the
    /// endpoint's <see cref="MaxArenaSizePerRequest"/> nor the largest class), so that an endpoint
    /// that always needs 300 KiB takes one 512 KiB chunk instead of chaining five. Bump arenas only;
    /// endpoints may turn it off (<see cref="RequestArenaEndpointOptions.AdaptiveFirstChunk"/>). Default <see langword="true"/>.
    /// </summary>
    public bool AdaptiveFirstChunk { get; set; } = true;

    /// <summary>What happens beyond <see cref="MaxArenaSizePerRequest"/>. Default <see cref="ArenaOverflowPolicy.FallBack"/>.</summary>
    public ArenaOverflowPolicy OverflowPolicy { get; set; } = ArenaOverflowPolicy.FallBack;

    /// <summary>Whether the bytes a request used are cleared when its arena is released. Default <see cref="ArenaClearPolicy.ClearUsed"/>.</summary>
    public ArenaClearPolicy ClearPolicy { get; set; } = ArenaClearPolicy.ClearUsed;

    /// <summary>The most memory all request arenas of the process may hold, idle or in use (every pool and large chunk at its full size, whatever the overflow policy), in bytes: from <see cref="InitialArenaSize"/> to <see cref="MaxMemoryBudget"/>. Default 256 MiB.</summary>
    public long MemoryBudget { get; set; } = 256L * 1024 * 1024;

    /// <summary>
    /// What a rent does when the budget is spent. Default <see cref="ArenaBudgetPolicy.Wait"/>: the asynchronous
    /// APIs (<see cref="IRequestBuffers.RentAsync"/>, <see cref="IRequestBuffers.ReadBodyAsync"/> and the APIs built
    /// on it, <see cref="RequestBufferStream"/>'s asynchronous writes) wait, without blocking a thread; the
    /// synchronous ones (<see cref="IRequestBuffers.Rent"/>, writers, synchronous stream writes) never wait and
    /// refuse at once.
    /// </summary>
    public ArenaBudgetPolicy BudgetPolicy { get; set; } = ArenaBudgetPolicy.Wait;

    /// <summary>
    /// How long an asynchronous rent waits for a chunk under <see cref="ArenaBudgetPolicy.Wait"/> before the request is
    /// rejected (503 with Retry-After): from 0 (no waiting) to <see cref="MaxBudgetWaitTimeout"/>. Default 100 ms.
    /// </summary>
    public TimeSpan BudgetWaitTimeout { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// How many asynchronous rents may wait for memory at once under <see cref="ArenaBudgetPolicy.Wait"/>; a rent that
    /// finds the queue full is rejected at once (503 with Retry-After), so an overload sheds load instead of queueing
    /// without bound. Waiters are served in arrival order. From 0 (no waiting) to <see cref="MaxBudgetQueueLimit"/>.
    /// Default 1024.
    /// </summary>
    public int BudgetQueueLimit { get; set; } = 1024;

    /// <summary>The Retry-After a rejected request is told: whole seconds from <see cref="MinRetryAfter"/> to <see cref="MaxRetryAfter"/>. Default 1 second.</summary>
    public TimeSpan RetryAfter { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Where arena memory is placed on NUMA machines. Default <see cref="ArenaNumaPlacement.LocalToRequestThread"/>.</summary>
    public ArenaNumaPlacement NumaPlacement { get; set; } = ArenaNumaPlacement.LocalToRequestThread;

    /// <summary>How often idle chunks are trimmed: chunks that stayed idle for a whole interval go back to the operating system. From <see cref="MinIdleTrimInterval"/> to <see cref="MaxIdleTrimInterval"/>. Default 30 seconds.</summary>
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

    /// <summary>
    /// How long memory a request released stays out of use before another request may get it, from
    /// zero to <see cref="MaxReuseDelay"/>. Default 100 ms.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Work that outlives its request and writes through the request's <see cref="Memory{T}"/> (re-reading
    /// <c>Span</c> on every use, as it must) is stopped at its next use by <see cref="ObjectDisposedException"/>;
    /// but a use already in progress when the request ends (a copy, a hash, a thread preempted in the
    /// middle of one) still completes. The delay keeps the released chunk away from other requests
    /// meanwhile, and the clear policy clears it as it comes back into use, after the delay, so such a
    /// write lands nowhere another request can see. The default is several scheduler periods, so that
    /// even a thread preempted in the middle of its write on a loaded machine finishes it in time; a
    /// use that stays in progress longer than the delay is not covered. A chunk with an outstanding <c>Pin()</c> handle (an
    /// asynchronous socket or file operation) stays out until the handle is disposed, whatever the delay.
    /// </para>
    /// <para>
    /// What it costs: chunks waiting out the delay count against <see cref="MemoryBudget"/> as in use
    /// (about requests per second × delay chunks), and a chunk comes back cold rather than warm from the
    /// last request, through the pool's slower path. In the sample's load test, the endpoint that
    /// gzips about 8 KiB into request memory served 0.74–0.86 times the requests per second of its
    /// best pooled twin with the default, and 0.93–0.99 times with zero (docs/benchmarks.md, seventh
    /// session). Zero turns the quarantine off: a released chunk is cleared at once and the next
    /// request of the same processor gets it (the fastest setting, and the one to use when no code
    /// keeps request memory past its request). Under <see cref="ArenaDiagnostics.Guard"/> every released
    /// chunk waits at least <see cref="MinGuardReuseDelay"/>, whatever this says.
    /// </para>
    /// </remarks>
    public TimeSpan ReuseDelay { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// What the request arenas record to explain a use of request memory after its request ended
    /// (see <see cref="ArenaDiagnostics"/>). Default <see cref="ArenaDiagnostics.Off"/>, which costs
    /// nothing; <see cref="ArenaDiagnostics.Track"/> costs a captured stack per rent and suits
    /// development; <see cref="ArenaDiagnostics.Guard"/> crashes the process on a late access and is
    /// for development only.
    /// </summary>
    public ArenaDiagnostics Diagnostics { get; set; } = ArenaDiagnostics.Off;
}
