namespace AllocHosting;

/// <summary>
/// The request-arena settings of one endpoint (<c>.WithRequestArena(o => …)</c>, or the properties
/// of <see cref="RequestArenaAttribute"/>): each setting left null keeps the global value of
/// <see cref="SwitchableAllocatorOptions"/>. Checked at the endpoint's first rent; a setting out of
/// range fails that rent (and every later one of the endpoint) with an
/// <see cref="InvalidOperationException"/> naming the endpoint and the setting.
/// </summary>
/// <remarks>
/// Every setting here is honoured per request by the one pool of the application: the arena kind
/// is not an endpoint setting (it would need a second pool and budget); it stays
/// <see cref="SwitchableAllocatorOptions.ArenaKind"/> for every endpoint.
/// </remarks>
public sealed class RequestArenaEndpointOptions
{
    /// <summary>The endpoint's <see cref="SwitchableAllocatorOptions.MaxArenaSizePerRequest"/>: from <see cref="SwitchableAllocatorOptions.InitialArenaSize"/> to <see cref="SwitchableAllocatorOptions.MemoryBudget"/> bytes; null for the global value.</summary>
    public long? MaxArenaSizePerRequest { get; set; }

    /// <summary>The endpoint's <see cref="SwitchableAllocatorOptions.OverflowPolicy"/>; null for the global value.</summary>
    public ArenaOverflowPolicy? OverflowPolicy { get; set; }

    /// <summary>
    /// The endpoint's clearing; null for the global value. An endpoint may only add clearing:
    /// <see cref="ArenaClearPolicy.ClearUsed"/> when the global policy is <see cref="ArenaClearPolicy.None"/>
    /// zeroes what the endpoint's requests used as they release it (late writers during
    /// <see cref="SwitchableAllocatorOptions.ReuseDelay"/> are not covered; set it globally for that);
    /// <see cref="ArenaClearPolicy.None"/> under a global <see cref="ArenaClearPolicy.ClearUsed"/> is refused,
    /// since the other endpoints' requests rely on getting cleared memory.
    /// </summary>
    public ArenaClearPolicy? ClearPolicy { get; set; }

    /// <summary>
    /// The size in bytes the endpoint's first chunk must hold, from <see cref="SwitchableAllocatorOptions.ArenaSizeUnit"/>
    /// to the endpoint's maximum; null to let <see cref="AdaptiveFirstChunk"/> decide. A size above one
    /// pool chunk takes the smallest large-chunk class that holds it (bump arenas only); a size of one
    /// pool chunk or less takes a pool chunk (pool chunks have one size).
    /// </summary>
    public int? FirstChunkSize { get; set; }

    /// <summary>Whether the endpoint's first chunk follows what its requests use (see <see cref="SwitchableAllocatorOptions.AdaptiveFirstChunk"/>); null for the global value. Ignored when <see cref="FirstChunkSize"/> is set.</summary>
    public bool? AdaptiveFirstChunk { get; set; }

    /// <summary>Copies the settings <paramref name="other"/> sets (the non-null ones) over these.</summary>
    internal void Override(RequestArenaEndpointOptions other)
    {
        MaxArenaSizePerRequest = other.MaxArenaSizePerRequest ?? MaxArenaSizePerRequest;
        OverflowPolicy = other.OverflowPolicy ?? OverflowPolicy;
        ClearPolicy = other.ClearPolicy ?? ClearPolicy;
        FirstChunkSize = other.FirstChunkSize ?? FirstChunkSize;
        AdaptiveFirstChunk = other.AdaptiveFirstChunk ?? AdaptiveFirstChunk;
    }
}
