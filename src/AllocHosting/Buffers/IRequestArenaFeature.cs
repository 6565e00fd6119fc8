namespace AllocHosting;

/// <summary>
/// The request's arena through <c>HttpContext.Features</c>, for middleware and code that has the
/// <c>HttpContext</c> but not the request's services. Like the <c>HttpContext</c> itself, it must
/// not be used after the request ended.
/// </summary>
public interface IRequestArenaFeature : IRequestBuffers
{
    /// <summary>Which allocator carves the arena.</summary>
    RequestArenaKind Kind { get; }

    /// <summary>Whether the request is still running (renting is allowed).</summary>
    bool IsActive { get; }
}
