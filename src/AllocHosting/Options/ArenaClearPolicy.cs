namespace AllocHosting;

/// <summary>What happens to the bytes a request used when its arena is released.</summary>
public enum ArenaClearPolicy
{
    /// <summary>Zero the bytes the request may have written (its high-water mark) so the next request never sees them. The default.</summary>
    ClearUsed,

    /// <summary>Leave them: faster, but the next request's buffers start with this request's bytes.</summary>
    None,
}
