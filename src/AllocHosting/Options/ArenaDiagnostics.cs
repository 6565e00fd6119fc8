namespace AllocHosting;

/// <summary>How much the request arenas record to explain a use of request memory after its request ended.</summary>
public enum ArenaDiagnostics
{
    /// <summary>Nothing is recorded: a stale use throws <see cref="ObjectDisposedException"/> with the plain message. Costs nothing. The default, and the setting for production.</summary>
    Off,

    /// <summary>
    /// Every rent records its endpoint and call site (a captured stack: microseconds and a small
    /// allocation per rent), so that a stale use throws an <see cref="ObjectDisposedException"/> naming
    /// the route and call site that rented the memory, is logged once per site as a warning and is
    /// counted (<c>allochosting.stale_uses</c>). For development and for hunting a leak in a test environment.
    /// </summary>
    Track,

    /// <summary>
    /// <see cref="Track"/>, and released chunks are made inaccessible (<c>mprotect</c>, Linux) while they
    /// wait before reuse, so that a late write through a kept <see cref="Span{T}"/> or pointer crashes the
    /// process with SIGSEGV instead of passing unseen. For development only: the crash is the intended
    /// outcome. Every released chunk waits at least <see cref="SwitchableAllocatorOptions.MinGuardReuseDelay"/>,
    /// whatever <see cref="SwitchableAllocatorOptions.ReuseDelay"/> says.
    /// </summary>
    Guard,
}
