using AllocHosting;
using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Request arenas for SignalR hubs: <c>services.AddSignalR().AddRequestArenas()</c>.</summary>
public static class RequestArenaSignalRBuilderExtensions
{
    /// <summary>
    /// Gives each hub invocation its own arena (an <see cref="ArenaScope"/> of the request pool), so that
    /// <see cref="IRequestBuffers"/>, injected into a hub method or the hub's constructor, rents memory that is
    /// released when the method returns. Without it, <see cref="IRequestBuffers"/> in a hub would rent from the
    /// connection's request, whose arena lives (and grows) as long as the connection. Calls
    /// <c>AddSwitchableAllocators()</c> if the app has not. Adds a global hub filter; calling it again adds nothing.
    /// </summary>
    /// <remarks>
    /// The arena ends when the hub method returns: its return value is serialised afterwards, so return managed
    /// values, not arena memory; a streaming method's stream must create its own scope
    /// (<see cref="IArenaScopeFactory"/>). Filters run in the order they are added: add this one first to cover the others.
    /// </remarks>
    /// <param name="builder">The SignalR builder from <c>AddSignalR()</c>.</param>
    /// <returns><paramref name="builder"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="builder"/> is null.</exception>
    public static ISignalRServerBuilder AddRequestArenas(this ISignalRServerBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        if (!builder.Services.Any(descriptor => descriptor.ServiceType == typeof(RequestArenaPool)))
        {
            // Only when missing: a second call would bind the configuration again after the app's own
            // configure callback, and a configured key would then override what the code set.
            builder.Services.AddSwitchableAllocators();
        }

        if (builder.Services.Any(descriptor => descriptor.ServiceType == typeof(RequestArenaHubFilter)))
        {
            return builder;
        }

        builder.Services.TryAddSingleton<RequestArenaHubFilter>();
        builder.Services.Configure<HubOptions>(options => options.AddFilter<RequestArenaHubFilter>());
        return builder;
    }
}
