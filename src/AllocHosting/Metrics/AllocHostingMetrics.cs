using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// The instruments of meter <see cref="MeterName"/> (see docs/metrics.md). Nothing here runs per
/// rent: the usage histogram and the overflow counter are recorded once per request that rented;
/// arenas in use, rents and the byte figures are observable and read the pool's counters when a
/// listener collects (so a listener's aggregation is not touched by every request on every core).
/// </summary>
internal sealed class AllocHostingMetrics
{
    public const string MeterName = "AllocHosting";

    // The instrument names, read by the dashboard sampler too.
    public const string UsedInstrument = "allochosting.request_arena.used";
    public const string OverflowedInstrument = "allochosting.request_arena.overflowed";
    public const string ActiveInstrument = "allochosting.request_arena.active";
    public const string RentsInstrument = "allochosting.request_arena.rents";
    public const string WaitingInstrument = "allochosting.request_arena.waiting";
    public const string RejectedInstrument = "allochosting.rejected";
    public const string FailuresInstrument = "allochosting.failures";
    public const string AllocatedInstrument = "allochosting.allocated";
    public const string LiveInstrument = "allochosting.live";
    public const string MappedInstrument = "allochosting.mapped";
    public const string ScopeLeakedInstrument = "allochosting.scope.leaked";
    public const string StaleUsesInstrument = "allochosting.stale_uses";

    public const string ArenaKindTag = "allochosting.arena.kind";
    public const string AllocatorTag = "allochosting.allocator";
    public const string NumaNodeTag = "allochosting.numa.node";
    public const string ErrorTypeTag = "error.type";
    public const string RouteTag = "http.route";

    // The route pattern of the request's endpoint (bounded: routes, not paths); absent without an endpoint.
    public const string HttpRouteTag = "http.route";

    // Who owned the arena: a request (the middleware) or an arena scope (IArenaScopeFactory, the hub filter).
    public const string ArenaOwnerTag = "allochosting.arena.owner";
    public const string RequestOwner = "request";
    public const string ScopeOwner = "scope";

    // Powers of 4 from 256 B to 64 MiB: one bucket per factor of four in request usage.
    internal static readonly long[] UsedBoundaries =
        [256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864];

    private readonly Meter _meter;
    private readonly Histogram<long> _used;
    private readonly Counter<long> _overflowed;
    private readonly Counter<long> _failures;
    private readonly Counter<long> _rejected;
    private readonly Counter<long> _scopesLeaked;
    private readonly Counter<long> _staleUses;

    private readonly SwitchableAllocator _switchable;

    public AllocHostingMetrics(IMeterFactory meterFactory, SwitchableAllocator switchable)
    {
        _switchable = switchable;
        _meter = meterFactory.Create(MeterName);
        _used = _meter.CreateHistogram(
            UsedInstrument,
            unit: "By",
            description: "Bytes a request used from its arena (high-water).",
            tags: null,
            advice: new InstrumentAdvice<long> { HistogramBucketBoundaries = UsedBoundaries });
        _overflowed = _meter.CreateCounter<long>(
            OverflowedInstrument,
            unit: "{request}",
            description: "Requests that needed memory beyond their first arena chunk.");
        _failures = _meter.CreateCounter<long>(
            FailuresInstrument,
            unit: "{failure}",
            description: "Failed allocations.");
        _rejected = _meter.CreateCounter<long>(
            RejectedInstrument,
            unit: "{request}",
            description: "Requests refused because the memory budget was spent.");
        _scopesLeaked = _meter.CreateCounter<long>(
            ScopeLeakedInstrument,
            unit: "{scope}",
            description: "Arena scopes never disposed by their owner, released when the scope factory was disposed.");
        _staleUses = _meter.CreateCounter<long>(
            StaleUsesInstrument,
            unit: "{use}",
            description: "Uses of request memory after its request ended (counted under Diagnostics Track or Guard).");
    }

    /// <summary>Creates the observable instruments over <paramref name="pool"/>'s counters (once, by the pool).</summary>
    public void Observe(RequestArenaPool pool)
    {
        _meter.CreateObservableCounter(
            AllocatedInstrument,
            () => ObserveAllocated(pool),
            unit: "By",
            description: "Bytes handed out.");
        _meter.CreateObservableUpDownCounter(
            LiveInstrument,
            () => ObserveLive(pool),
            unit: "By",
            description: "Bytes handed out and not yet released.");
        _meter.CreateObservableUpDownCounter(
            ActiveInstrument,
            () => pool.ActiveArenas,
            unit: "{arena}",
            description: "Request arenas in use now.");
        _meter.CreateObservableUpDownCounter(
            WaitingInstrument,
            () => pool.WaitingRents,
            unit: "{rent}",
            description: "Asynchronous rents waiting for arena memory now (budget spent, policy Wait).");
        _meter.CreateObservableCounter(
            RentsInstrument,
            () => pool.RentCount,
            unit: "{rent}",
            description: "Rents served from request arena memory.");
        _meter.CreateObservableUpDownCounter(
            MappedInstrument,
            pool.ObserveMapped,
            unit: "By",
            description: "Bytes obtained from the operating system.");
    }

    /// <summary>The value of <see cref="ArenaKindTag"/> for <paramref name="kind"/> (also the dashboard's arena kind).</summary>
    public static string ArenaKindName(RequestArenaKind kind) => kind == RequestArenaKind.Bump ? "bump" : "bit_set";

    private Measurement<long>[] ObserveAllocated(RequestArenaPool pool)
    {
        AllocatorStatistics global = _switchable.Global.Statistics;
        AllocatorStatistics thread = _switchable.ThreadLocal.Statistics;
        return ByAllocator(pool.AllocatedBytesForCounter, thread.TotalBytesAllocated, global.TotalBytesAllocated);
    }

    private Measurement<long>[] ObserveLive(RequestArenaPool pool)
    {
        AllocatorStatistics global = _switchable.Global.Statistics;
        AllocatorStatistics thread = _switchable.ThreadLocal.Statistics;
        return ByAllocator(pool.LiveBytes, thread.BytesInUse, global.BytesInUse);
    }

    // request: the arenas (pool and large chunks); thread: the switchable allocator's per-thread
    // heaps; global: its global allocator.
    private static Measurement<long>[] ByAllocator(long request, long thread, long global) =>
    [
        new(request, new KeyValuePair<string, object?>(AllocatorTag, "request")),
        new(thread, new KeyValuePair<string, object?>(AllocatorTag, "thread")),
        new(global, new KeyValuePair<string, object?>(AllocatorTag, "global")),
    ];

    /// <summary>
    /// Records the end of a request or scope that rented: once per such arena; <paramref name="owner"/>
    /// is <see cref="RequestOwner"/> or <see cref="ScopeOwner"/>; <paramref name="route"/> the route
    /// pattern of the request's endpoint (tag <see cref="HttpRouteTag"/>, left out when null).
    /// </summary>
    public void ArenaReleased(long usedBytes, bool overflowed, string kind, string owner, string? route = null)
    {
        if (_used.Enabled)
        {
            RecordUsedSlow(usedBytes, kind, owner, route);
        }

        if (overflowed && _overflowed.Enabled)
        {
            AddOverflowedSlow(owner, route);
        }
    }

    /// <summary>Counts an arena scope that its owner never disposed (found when the scope factory is disposed).</summary>
    public void ScopeLeaked()
    {
        if (_scopesLeaked.Enabled)
        {
            _scopesLeaked.Add(1);
        }
    }

    /// <summary>Counts one use of request memory after its request ended, tagged with the route that rented it (Diagnostics Track or Guard only).</summary>
    public void StaleUse(string route)
    {
        if (_staleUses.Enabled)
        {
            _staleUses.Add(1, new KeyValuePair<string, object?>(RouteTag, route));
        }
    }

    public void Failure(string errorType)
    {
        if (_failures.Enabled)
        {
            AddFailureSlow(errorType);
        }
    }

    public void Rejected()
    {
        if (_rejected.Enabled)
        {
            _rejected.Add(1);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void RecordUsedSlow(long usedBytes, string kind, string owner, string? route)
    {
        if (route is null)
        {
            _used.Record(usedBytes, new KeyValuePair<string, object?>(ArenaKindTag, kind), new KeyValuePair<string, object?>(ArenaOwnerTag, owner));
        }
        else
        {
            _used.Record(usedBytes, new KeyValuePair<string, object?>(ArenaKindTag, kind), new KeyValuePair<string, object?>(ArenaOwnerTag, owner), new KeyValuePair<string, object?>(HttpRouteTag, route));
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddOverflowedSlow(string owner, string? route)
    {
        if (route is null)
        {
            _overflowed.Add(1, new KeyValuePair<string, object?>(ArenaOwnerTag, owner));
        }
        else
        {
            _overflowed.Add(1, new KeyValuePair<string, object?>(ArenaOwnerTag, owner), new KeyValuePair<string, object?>(HttpRouteTag, route));
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddFailureSlow(string errorType) =>
        _failures.Add(1, new KeyValuePair<string, object?>(ErrorTypeTag, errorType));
}
