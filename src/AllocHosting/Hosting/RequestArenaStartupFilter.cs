using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting;

/// <summary>Puts the request-arena middleware at the very start of the pipeline, unless the application placed it with <c>UseRequestArena()</c>.</summary>
internal sealed class RequestArenaStartupFilter(RequestArenaPlacement placement) : IStartupFilter
{
    public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
    {
        // Decided when the pipeline is built (after the application's own configuration ran),
        // so an explicit UseRequestArena() anywhere wins.
        IServiceProvider services = app.ApplicationServices;
        app.Use(nextDelegate => placement.PlacedExplicitly
            ? nextDelegate
            : ActivatorUtilities.CreateInstance<RequestArenaMiddleware>(services, nextDelegate).InvokeAsync);
        next(app);
    };
}
