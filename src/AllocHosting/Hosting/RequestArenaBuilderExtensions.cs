using AllocHosting;
using Microsoft.Extensions.DependencyInjection;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Places the request-arena middleware of <c>AddSwitchableAllocators</c> explicitly.</summary>
public static class RequestArenaBuilderExtensions
{
    /// <summary>
    /// Adds the request-arena middleware here instead of at the start of the pipeline (where
    /// <c>AddSwitchableAllocators</c> otherwise puts it). Requests that do not pass this point
    /// get no arena. Call it at most once.
    /// </summary>
    /// <param name="app">The application's pipeline.</param>
    /// <returns><paramref name="app"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="app"/> is null.</exception>
    /// <exception cref="InvalidOperationException"><c>AddSwitchableAllocators</c> was not called, or this method was called before.</exception>
    public static IApplicationBuilder UseRequestArena(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        RequestArenaPlacement placement = app.ApplicationServices.GetService<RequestArenaPlacement>()
            ?? throw new InvalidOperationException("UseRequestArena() needs services.AddSwitchableAllocators() first.");
        placement.MarkPlaced();
        return app.UseMiddleware<RequestArenaMiddleware>();
    }
}
