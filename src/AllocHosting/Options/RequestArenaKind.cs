namespace AllocHosting;

/// <summary>Which allocator carves a request's arena.</summary>
public enum RequestArenaKind
{
    /// <summary>Bump allocation: the fastest; renting from several tasks of a request is lock-free. The default.</summary>
    Bump,

    /// <summary>Bit set allocation over fixed-size blocks: renting takes a short lock; block rounding costs some space.</summary>
    BitSet,
}
