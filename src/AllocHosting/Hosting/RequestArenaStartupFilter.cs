using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace AllocHosting;

/// <summary>
/// Puts the request-arena middleware at the very start of the pipeline, unless the application
/// placed it with <c>UseRequestArena()</c>; then checks every endpoint's arena settings.
/// </summary>
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

        // The application's endpoints exist once its configuration ran: invalid per-endpoint arena
        // settings fail the start, all of them in one message, rather than each endpoint's first rent.
        EndpointArenaProfiles.ThrowIfAnyInvalid(
            services.GetService<EndpointDataSource>()?.Endpoints ?? [],
            services.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value);
    };
}
