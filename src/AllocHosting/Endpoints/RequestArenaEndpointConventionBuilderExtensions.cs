using AllocHosting;

namespace Microsoft.AspNetCore.Builder;

/// <summary>
/// Per-endpoint request-arena settings for minimal APIs, route groups and any other endpoint
/// builder: <c>app.MapPost("/upload", …).WithRequestArena(o => o.MaxArenaSizePerRequest = 8 &lt;&lt; 20)</c>.
/// </summary>
public static class RequestArenaEndpointConventionBuilderExtensions
{
    /// <summary>
    /// Sets the request-arena settings of the builder's endpoints (see <see cref="RequestArenaEndpointOptions"/>;
    /// unset ones keep the global <see cref="SwitchableAllocatorOptions"/>). On a route group, an
    /// endpoint's own call wins, setting by setting. <paramref name="configure"/> runs once, now.
    /// </summary>
    /// <returns>The builder, for chaining.</returns>
    public static TBuilder WithRequestArena<TBuilder>(this TBuilder builder, Action<RequestArenaEndpointOptions> configure)
        where TBuilder : IEndpointConventionBuilder
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        var settings = new RequestArenaEndpointOptions();
        configure(settings);
        var metadata = new RequestArenaEndpointMetadata(settings, disables: false);
        builder.Add(endpoint => endpoint.Metadata.Add(metadata));
        return builder;
    }

    /// <summary>
    /// Disables request arenas for the builder's endpoints: <see cref="IRequestBuffers"/> refuses to
    /// rent there with an <see cref="InvalidOperationException"/> naming the endpoint (for endpoints
    /// that must never hold arena memory, e.g. long-lived streams).
    /// </summary>
    /// <returns>The builder, for chaining.</returns>
    public static TBuilder DisableRequestArena<TBuilder>(this TBuilder builder)
        where TBuilder : IEndpointConventionBuilder
    {
        ArgumentNullException.ThrowIfNull(builder);
        var metadata = new RequestArenaEndpointMetadata(new RequestArenaEndpointOptions(), disables: true);
        builder.Add(endpoint => endpoint.Metadata.Add(metadata));
        return builder;
    }
}
