namespace AllocHosting;

/// <summary>
/// Disables request arenas for an MVC controller or action: <see cref="IRequestBuffers"/> (and the
/// request's <see cref="IRequestArenaFeature"/>) refuse to rent there with an
/// <see cref="InvalidOperationException"/> naming the endpoint. An action's <see cref="RequestArenaAttribute"/>
/// enables the arena again under a disabled controller.
/// </summary>
[AttributeUsage(AttributeTargets.Class | AttributeTargets.Method, AllowMultiple = false, Inherited = true)]
public sealed class DisableRequestArenaAttribute : Attribute, IRequestArenaMetadata
{
    private static readonly RequestArenaEndpointOptions None = new();

    bool IRequestArenaMetadata.Disables => true;

    RequestArenaEndpointOptions IRequestArenaMetadata.Settings => None;
}
