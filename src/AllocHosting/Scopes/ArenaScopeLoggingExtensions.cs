using Microsoft.Extensions.Logging;

namespace AllocHosting;

/// <summary>The log messages of arena scopes (event ids from 100, apart from the pool's).</summary>
internal static partial class ArenaScopeLoggingExtensions
{
    [LoggerMessage(100, LogLevel.Warning, "An arena scope created in {Member} at {File}:{Line} was never disposed: its {Used} bytes are released now, as the scope factory is disposed. Dispose every scope (await using ArenaScope scope = factory.CreateScope()).", EventName = "ArenaScopeLeaked")]
    public static partial void ArenaScopeLeaked(this ILogger logger, string member, string file, int line, long used);
}
