namespace AllocHosting;

/// <summary>
/// The request-arena settings of an MVC controller or action (see <see cref="RequestArenaEndpointOptions"/>):
/// a property left unset keeps the controller's value, else the global one (an action's attribute
/// wins over its controller's, setting by setting). On an action under a controller marked
/// <see cref="DisableRequestArenaAttribute"/>, it enables the arena again.
/// </summary>
/// <example><code>[RequestArena(MaxArenaSizePerRequest = 4 * 1024 * 1024, OverflowPolicy = ArenaOverflowPolicy.Fail)]</code></example>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Method, AllowMultiple = false, Inherited = true)]
public sealed class RequestArenaAttribute : Attribute, IRequestArenaMetadata
{
    private readonly RequestArenaEndpointOptions _settings = new();

    /// <summary>See <see cref="RequestArenaEndpointOptions.MaxArenaSizePerRequest"/>; 0 (unset) for the global value.</summary>
    public long MaxArenaSizePerRequest
    {
        get => _settings.MaxArenaSizePerRequest ?? 0;
        set => _settings.MaxArenaSizePerRequest = value;
    }

    /// <summary>See <see cref="RequestArenaEndpointOptions.OverflowPolicy"/>; unset for the global value.</summary>
    public ArenaOverflowPolicy OverflowPolicy
    {
        get => _settings.OverflowPolicy ?? default;
        set => _settings.OverflowPolicy = value;
    }

    /// <summary>See <see cref="RequestArenaEndpointOptions.ClearPolicy"/>; unset for the global value.</summary>
    public ArenaClearPolicy ClearPolicy
    {
        get => _settings.ClearPolicy ?? default;
        set => _settings.ClearPolicy = value;
    }

    /// <summary>See <see cref="RequestArenaEndpointOptions.FirstChunkSize"/>; 0 (unset) to let the adaptive sizing decide.</summary>
    public int FirstChunkSize
    {
        get => _settings.FirstChunkSize ?? 0;
        set => _settings.FirstChunkSize = value;
    }

    /// <summary>See <see cref="RequestArenaEndpointOptions.AdaptiveFirstChunk"/>; unset for the global value.</summary>
    public bool AdaptiveFirstChunk
    {
        get => _settings.AdaptiveFirstChunk ?? false;
        set => _settings.AdaptiveFirstChunk = value;
    }

    bool IRequestArenaMetadata.Disables => false;

    RequestArenaEndpointOptions IRequestArenaMetadata.Settings => _settings;
}
