namespace AllocHosting;

/// <summary>The metadata <c>WithRequestArena</c> and <c>DisableRequestArena</c> add to an endpoint.</summary>
internal sealed class RequestArenaEndpointMetadata(RequestArenaEndpointOptions settings, bool disables) : IRequestArenaMetadata
{
    public bool Disables => disables;

    public RequestArenaEndpointOptions Settings => settings;

    public override string ToString() => disables ? "DisableRequestArena" : "WithRequestArena";
}
