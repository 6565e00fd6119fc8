using System.Collections.Concurrent;
using AllocHosting.Allocators;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;

namespace AllocHosting;

/// <summary>
/// The process-wide half of the request arenas' diagnostics (option <c>Diagnostics</c> Track or
/// Guard): hands each request a <see cref="RequestRentTracker"/>, keeps one
/// <see cref="ArenaRentSite"/> per (route, call site), and reports stale uses: every one counted in
/// <c>allochosting.stale_uses</c>, the first of each (route, call site) logged as a warning.
/// </summary>
/// <remarks>
/// Threads: any. The sites and the logged set are bounded (<see cref="MaxSites"/>): past it, sites
/// are no longer shared and no more warnings are logged, but every stale use is still counted.
/// </remarks>
internal sealed class StaleUseReporter
{
    /// <summary>The most distinct (route, call site) pairs kept (and logged).</summary>
    public const int MaxSites = 10_000;

    private readonly AllocHostingMetrics _metrics;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<(string Route, string CallSite), ArenaRentSite> _sites = new();
    private readonly ConcurrentDictionary<(string Route, string CallSite), bool> _logged = new();

    public StaleUseReporter(AllocHostingMetrics metrics, ILogger logger)
    {
        _metrics = metrics;
        _logger = logger;
    }

    /// <summary>A tracker for the request of <paramref name="context"/> (null: an arena scope).</summary>
    public RequestRentTracker CreateTracker(HttpContext? context) => new(this, context);

    /// <summary>The shared site of (<paramref name="route"/>, <paramref name="callSite"/>).</summary>
    public ArenaRentSite Site(string route, string callSite)
    {
        if (_sites.TryGetValue((route, callSite), out ArenaRentSite? site))
        {
            return site;
        }

        site = new ArenaRentSite(route, callSite);
        return _sites.Count < MaxSites ? _sites.GetOrAdd((route, callSite), site) : site;
    }

    /// <summary>Counts a stale use of memory rented at <paramref name="site"/>; logs the first of its (route, call site).</summary>
    public void Report(ArenaRentSite site)
    {
        _metrics.StaleUse(site.Route);
        if (_logged.Count < MaxSites && _logged.TryAdd((site.Route, site.CallSite), true))
        {
            _logger.StaleRequestMemoryUse(site.Route, site.CallSite);
        }
    }

    /// <summary>The route of the request's endpoint: its pattern, else its display name; read once per request (at its first tracked rent).</summary>
    public static string RouteOf(HttpContext? context)
    {
        if (context is null)
        {
            return "(arena scope)";
        }

        Endpoint? endpoint = context.GetEndpoint();
        return endpoint switch
        {
            RouteEndpoint { RoutePattern.RawText: { } pattern } => pattern,
            { DisplayName: { } name } => name,
            _ => "(no endpoint)",
        };
    }
}
