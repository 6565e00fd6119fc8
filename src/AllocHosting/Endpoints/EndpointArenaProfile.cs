using System.Numerics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace AllocHosting;

/// <summary>
/// One endpoint's request-arena settings, resolved once from its metadata and the global options
/// and validated, plus the statistics of its requests' usage that size its first chunk.
/// </summary>
/// <remarks>
/// <para>
/// Usage statistics: a fixed histogram of power-of-two buckets (bucket b counts requests that used
/// at most 2^b bytes and more than 2^(b-1)), added to with interlocked increments at each release.
/// Every <see cref="RecomputeEvery"/> samples the releasing thread recomputes the 90th percentile
/// (the upper bound of its bucket) and publishes it; every <see cref="DecayEvery"/> samples it
/// halves the buckets, so the figure follows recent requests. A recomputation racing with adds
/// is off by those adds at most: the figure is a hint, never a limit.
/// </para>
/// <para>Threads: immutable but for the statistics; every member may be called from any thread.</para>
/// </remarks>
internal sealed class EndpointArenaProfile
{
    /// <summary>Requests between two recomputations of the adaptive first-chunk size (and the samples needed before the first).</summary>
    internal const int RecomputeEvery = 16;

    /// <summary>Requests between two halvings of the histogram.</summary>
    internal const int DecayEvery = 256;

    private const double Percentile = 0.9;

    private readonly long[] _buckets = new long[64];
    private long _samples;
    private long _adaptiveTarget;   // 0 until the first recomputation

    private EndpointArenaProfile(string name, string? route)
    {
        Name = name;
        Route = route;
    }

    /// <summary>The endpoint's name in messages: its display name, else its route pattern.</summary>
    public string Name { get; }

    /// <summary>The route pattern (the <c>http.route</c> tag); null for endpoints without one.</summary>
    public string? Route { get; }

    /// <summary>Whether the endpoint disabled request arenas.</summary>
    public bool Disabled { get; private init; }

    /// <summary>Why the endpoint's settings are refused (null: they are valid).</summary>
    public string? Error { get; private init; }

    /// <summary>The endpoint's maximum per request, in bytes.</summary>
    public long MaxBytes { get; private init; }

    /// <summary>The endpoint's overflow policy.</summary>
    public ArenaOverflowPolicy OverflowPolicy { get; private init; }

    /// <summary>Whether the endpoint's chunks are cleared as they are released (the endpoint asks for clearing the global policy does not do).</summary>
    public bool ClearOnRelease { get; private init; }

    /// <summary>The endpoint's fixed first-chunk size (0: none).</summary>
    public long FixedFirstChunk { get; private init; }

    /// <summary>Whether the first chunk follows the usage statistics.</summary>
    public bool Adaptive { get; private init; }

    /// <summary>Requests recorded so far (before decay).</summary>
    public long Samples => Interlocked.Read(ref _samples);

    /// <summary>What the endpoint's first chunk should hold, in bytes (before rounding to a size class); 0 for a pool chunk.</summary>
    public long FirstChunkBytes => FixedFirstChunk > 0 ? FixedFirstChunk : Adaptive ? Volatile.Read(ref _adaptiveTarget) : 0;

    /// <summary>The profile of <paramref name="endpoint"/> under <paramref name="options"/>: its metadata applied in order, then validated.</summary>
    public static EndpointArenaProfile Create(Endpoint endpoint, SwitchableAllocatorOptions options)
    {
        string? route = (endpoint as RouteEndpoint)?.RoutePattern.RawText;
        string name = endpoint.DisplayName ?? route ?? "(unnamed endpoint)";
        var settings = new RequestArenaEndpointOptions();
        bool disabled = false;
        foreach (IRequestArenaMetadata item in endpoint.Metadata.GetOrderedMetadata<IRequestArenaMetadata>())
        {
            disabled = item.Disables;
            settings.Override(item.Settings);
        }

        long max = settings.MaxArenaSizePerRequest ?? options.MaxArenaSizePerRequest;
        ArenaOverflowPolicy overflow = settings.OverflowPolicy ?? options.OverflowPolicy;
        ArenaClearPolicy clear = settings.ClearPolicy ?? options.ClearPolicy;
        string? error = disabled ? null : Validate(settings, options, max, overflow, clear);
        return new EndpointArenaProfile(name, route)
        {
            Disabled = disabled,
            Error = error is null ? null : $"The request-arena settings of endpoint '{name}' are invalid: {error}",
            MaxBytes = max,
            OverflowPolicy = overflow,
            ClearOnRelease = clear == ArenaClearPolicy.ClearUsed && options.ClearPolicy != ArenaClearPolicy.ClearUsed,
            FixedFirstChunk = settings.FirstChunkSize ?? 0,
            Adaptive = settings.FirstChunkSize is null && (settings.AdaptiveFirstChunk ?? options.AdaptiveFirstChunk),
        };
    }

    // The endpoint's settings within the ranges of the global ones; null when valid.
    private static string? Validate(RequestArenaEndpointOptions settings, SwitchableAllocatorOptions options, long max, ArenaOverflowPolicy overflow, ArenaClearPolicy clear)
    {
        if (max < options.InitialArenaSize || max > options.MemoryBudget)
        {
            return $"MaxArenaSizePerRequest is {max}; allowed: from {SwitchableAllocatorOptions.SectionName}:InitialArenaSize ({options.InitialArenaSize}) to {SwitchableAllocatorOptions.SectionName}:MemoryBudget ({options.MemoryBudget}) bytes.";
        }

        if (!Enum.IsDefined(overflow))
        {
            return $"OverflowPolicy is {overflow}; allowed: {string.Join(", ", Enum.GetNames<ArenaOverflowPolicy>())}.";
        }

        if (!Enum.IsDefined(clear))
        {
            return $"ClearPolicy is {clear}; allowed: {string.Join(", ", Enum.GetNames<ArenaClearPolicy>())}.";
        }

        if (clear == ArenaClearPolicy.None && options.ClearPolicy == ArenaClearPolicy.ClearUsed)
        {
            return $"ClearPolicy is None but {SwitchableAllocatorOptions.SectionName}:ClearPolicy is ClearUsed: the other endpoints' requests rely on cleared memory, so an endpoint may only add clearing.";
        }

        if (settings.FirstChunkSize is { } first && (first < SwitchableAllocatorOptions.ArenaSizeUnit || first > max))
        {
            return $"FirstChunkSize is {first}; allowed: from {SwitchableAllocatorOptions.ArenaSizeUnit} to the endpoint's MaxArenaSizePerRequest ({max}) bytes.";
        }

        return null;
    }

    /// <summary>Throws when the endpoint disabled arenas or its settings are invalid (at each rent that would take a first chunk).</summary>
    /// <exception cref="InvalidOperationException">The endpoint may not rent.</exception>
    public void ThrowIfUnusable()
    {
        if (Disabled)
        {
            throw new InvalidOperationException(
                $"Request arenas are disabled for endpoint '{Name}' (DisableRequestArena() or [DisableRequestArena]): IRequestBuffers cannot rent here. "
                + "Remove the setting, or enable the arena on this endpoint with WithRequestArena()/[RequestArena].");
        }

        if (Error is not null)
        {
            throw new InvalidOperationException(Error);
        }
    }

    /// <summary>Records the used bytes of a request of the endpoint that rented (at its release).</summary>
    public void Record(long usedBytes)
    {
        if (!Adaptive || usedBytes <= 0)
        {
            return;
        }

        int bucket = usedBytes <= 1 ? 0 : 64 - BitOperations.LeadingZeroCount((ulong)(usedBytes - 1));
        Interlocked.Increment(ref _buckets[bucket]);
        long samples = Interlocked.Increment(ref _samples);
        if (samples % RecomputeEvery == 0)
        {
            Recompute(decay: samples % DecayEvery == 0);
        }
    }

    // The releasing thread that completed a batch of samples: publishes the percentile's bucket bound.
    private void Recompute(bool decay)
    {
        long total = 0;
        for (int i = 0; i < _buckets.Length; i++)
        {
            total += Volatile.Read(ref _buckets[i]);
        }

        long rank = (long)Math.Ceiling(total * Percentile);
        long seen = 0;
        int at = _buckets.Length - 1;
        for (int i = 0; i < _buckets.Length; i++)
        {
            seen += Volatile.Read(ref _buckets[i]);
            if (seen >= rank)
            {
                at = i;
                break;
            }
        }

        Volatile.Write(ref _adaptiveTarget, at >= 62 ? long.MaxValue : 1L << at);
        if (decay)
        {
            for (int i = 0; i < _buckets.Length; i++)
            {
                long value = Volatile.Read(ref _buckets[i]);
                Interlocked.Add(ref _buckets[i], -(value / 2));
            }
        }
    }
}
