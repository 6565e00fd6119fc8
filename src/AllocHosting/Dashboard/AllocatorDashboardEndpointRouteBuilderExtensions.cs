using System.Diagnostics.CodeAnalysis;
using AllocHosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Maps the live allocator page: <c>app.MapAllocatorDashboard()</c>.</summary>
public static class AllocatorDashboardEndpointRouteBuilderExtensions
{
    /// <summary>
    /// Maps a live allocator dashboard at <paramref name="pattern"/>: one self-contained HTML page
    /// (served from this assembly, no third-party code, nothing fetched from elsewhere) that polls
    /// <c>{pattern}/data</c> and charts arena usage per request, live bytes per allocator, rents per
    /// second, overflowed and rejected requests and mapped memory per NUMA node. The data comes from
    /// the app's own <c>AllocHosting</c> meter through an in-process listener, which starts here: an
    /// app that does not call this method serves no page and runs no listener.
    /// </summary>
    /// <remarks>
    /// The page shows the app's memory behaviour and configuration. Protect it like any diagnostics
    /// endpoint: map it in development only, or require authorization on the returned builder, for
    /// example <c>app.MapAllocatorDashboard().RequireAuthorization("ops")</c>.
    /// </remarks>
    /// <param name="endpoints">The application's endpoints (<c>app</c>).</param>
    /// <param name="pattern">Where the page is; its data is at <c>{pattern}/data</c> and its script and style sheet beside it. Default <c>/allocators</c>.</param>
    /// <returns>A builder for the page's endpoints, to add conventions such as authorization or host filters to all of them.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="endpoints"/> or <paramref name="pattern"/> is null.</exception>
    /// <exception cref="ArgumentException"><paramref name="pattern"/> is empty or white space.</exception>
    /// <exception cref="InvalidOperationException"><c>services.AddSwitchableAllocators()</c> was not called.</exception>
    public static IEndpointConventionBuilder MapAllocatorDashboard(
        this IEndpointRouteBuilder endpoints,
        [StringSyntax("Route")] string pattern = "/allocators")
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentException.ThrowIfNullOrWhiteSpace(pattern);
        if (endpoints.ServiceProvider.GetService<RequestArenaPool>() is null)
        {
            throw new InvalidOperationException(
                "MapAllocatorDashboard() needs builder.Services.AddSwitchableAllocators() first.");
        }

        AllocatorDashboardSampler sampler = endpoints.ServiceProvider.GetRequiredService<AllocatorDashboardSampler>();
        sampler.Start();

        RouteGroupBuilder group = endpoints.MapGroup(pattern);
        group.MapGet("/", AllocatorDashboardAssets.WritePageAsync).ExcludeFromDescription();
        group.MapGet("/data", (HttpContext context) => AllocatorDashboardAssets.WriteDataAsync(context, sampler)).ExcludeFromDescription();
        group.MapGet("/" + AllocatorDashboardAssets.ScriptName, AllocatorDashboardAssets.WriteScriptAsync).ExcludeFromDescription();
        group.MapGet("/" + AllocatorDashboardAssets.StyleName, AllocatorDashboardAssets.WriteStyleAsync).ExcludeFromDescription();
        return group;
    }
}
