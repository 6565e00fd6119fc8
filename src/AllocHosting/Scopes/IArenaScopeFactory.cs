using System.Runtime.CompilerServices;

namespace AllocHosting;

/// <summary>
/// Creates arena scopes: request memory for work that is not a request (a <c>BackgroundService</c>
/// loop, a <c>Channel</c> consumer, a timer, work a request hands off). Registered as a singleton by
/// <c>services.AddSwitchableAllocators()</c>; scopes come from the same pool and budget as requests.
/// </summary>
/// <remarks>
/// <code>
/// await using ArenaScope scope = scopes.CreateScope();
/// Memory&lt;byte&gt; buffer = scope.Rent(64 * 1024);   // released when the scope is disposed
/// </code>
/// A scope that is never disposed is not leaked silently: when the factory is disposed (host shutdown)
/// it releases every scope still live, logs a warning naming where each was created, and counts it in
/// <c>allochosting.scope.leaked</c>.
/// </remarks>
public interface IArenaScopeFactory
{
    /// <summary>Creates an arena scope: an arena of the pool, held until the scope is disposed. Takes no memory until the first rent.</summary>
    /// <param name="callerMemberName">Where the scope is created (filled in by the compiler): named if the scope is never disposed.</param>
    /// <param name="callerFilePath">The source file of the call (filled in by the compiler).</param>
    /// <param name="callerLineNumber">The line of the call (filled in by the compiler).</param>
    /// <returns>The scope; dispose it (<c>await using</c>) when the work is done.</returns>
    /// <exception cref="ObjectDisposedException">The factory was disposed (the host has shut down).</exception>
    ArenaScope CreateScope(
        [CallerMemberName] string callerMemberName = "",
        [CallerFilePath] string callerFilePath = "",
        [CallerLineNumber] int callerLineNumber = 0);
}
