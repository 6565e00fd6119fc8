using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// The pool's endpoint profiles (see <see cref="EndpointArenaProfile"/>), keyed by endpoint and
/// bounded: at most <see cref="MaxTrackedEndpoints"/> are kept; a request of an endpoint beyond
/// that gets a fresh profile (its settings, no adaptive statistics), so an application with
/// endpoints created on the fly cannot grow this without bound.
/// </summary>
/// <remarks>Threads: any; a profile is looked up once per request that takes a chunk.</remarks>
internal sealed class EndpointArenaProfiles(SwitchableAllocatorOptions options)
{
    /// <summary>The most endpoints whose profiles (and usage statistics) are kept.</summary>
    internal const int MaxTrackedEndpoints = 1024;

    private readonly ConcurrentDictionary<Endpoint, EndpointArenaProfile> _profiles = new(ReferenceEqualityComparer.Instance);

    /// <summary>Endpoints tracked now.</summary>
    public int Count => _profiles.Count;

    /// <summary>
    /// Checks the arena settings of every endpoint the application mapped, at start-up: throws one
    /// <see cref="InvalidOperationException"/> listing each endpoint whose settings are invalid (the
    /// same messages its rents would give), so a misconfigured endpoint stops the start instead of
    /// failing its first request. Endpoints added later are still checked at their first rent.
    /// </summary>
    /// <exception cref="InvalidOperationException">An endpoint's settings are invalid.</exception>
    public static void ThrowIfAnyInvalid(IEnumerable<Endpoint> endpoints, SwitchableAllocatorOptions options)
    {
        List<string>? errors = null;
        foreach (Endpoint endpoint in endpoints)
        {
            if (endpoint.Metadata.GetMetadata<IRequestArenaMetadata>() is null)
            {
                continue;
            }

            if (EndpointArenaProfile.Create(endpoint, options).Error is { } error)
            {
                (errors ??= []).Add(error);
            }
        }

        if (errors is not null)
        {
            throw new InvalidOperationException(string.Join(Environment.NewLine, errors));
        }
    }

    /// <summary>The profile of the request's endpoint; null when there is no request (a scope) or routing has not chosen an endpoint (the global options apply).</summary>
    public EndpointArenaProfile? Resolve(HttpContext? context)
    {
        Endpoint? endpoint = context?.GetEndpoint();
        if (endpoint is null)
        {
            return null;
        }

        if (_profiles.TryGetValue(endpoint, out EndpointArenaProfile? profile))
        {
            return profile;
        }

        profile = EndpointArenaProfile.Create(endpoint, options);
        return _profiles.Count < MaxTrackedEndpoints ? _profiles.GetOrAdd(endpoint, profile) : profile;
    }
}
