using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.Primitives;

namespace AllocHosting.Tests;

/// <summary>An endpoint data source whose endpoints arrive after the application started (as plugins or dynamic routes do).</summary>
internal sealed class LateEndpointDataSource : EndpointDataSource
{
    private readonly Lock _lock = new();
    private List<Endpoint> _endpoints = [];
    private CancellationTokenSource _changed = new();

    public override IReadOnlyList<Endpoint> Endpoints
    {
        get
        {
            lock (_lock)
            {
                return _endpoints;
            }
        }
    }

    public override IChangeToken GetChangeToken()
    {
        lock (_lock)
        {
            return new CancellationChangeToken(_changed.Token);
        }
    }

    /// <summary>Adds a GET endpoint at <paramref name="route"/> with <paramref name="metadata"/> and signals the change.</summary>
    public void Add(string route, RequestDelegate handler, params object[] metadata)
    {
        var builder = new RouteEndpointBuilder(handler, RoutePatternFactory.Parse(route), order: 0) { DisplayName = route };
        builder.Metadata.Add(new HttpMethodMetadata(["GET"]));
        foreach (object item in metadata)
        {
            builder.Metadata.Add(item);
        }

        CancellationTokenSource previous;
        lock (_lock)
        {
            _endpoints = [.. _endpoints, builder.Build()];
            previous = _changed;
            _changed = new CancellationTokenSource();
        }

        previous.Cancel();
        previous.Dispose();
    }
}
