namespace AllocHosting;

/// <summary>
/// Endpoint metadata that sets an endpoint's request-arena settings: <see cref="RequestArenaAttribute"/>,
/// <see cref="DisableRequestArenaAttribute"/> and what <c>WithRequestArena</c>/<c>DisableRequestArena</c> add.
/// The endpoint's items apply in metadata order (controller, then action, then conventions), so the
/// most specific one wins setting by setting.
/// </summary>
internal interface IRequestArenaMetadata
{
    /// <summary>Whether this item disables the endpoint's arena (false: it enables it again, with its settings).</summary>
    bool Disables { get; }

    /// <summary>The settings this item sets (null members keep what earlier items or the global options set).</summary>
    RequestArenaEndpointOptions Settings { get; }
}
