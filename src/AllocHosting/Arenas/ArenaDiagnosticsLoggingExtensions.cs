using Microsoft.Extensions.Logging;

namespace AllocHosting;

internal static partial class ArenaDiagnosticsLoggingExtensions
{
    [LoggerMessage(30, LogLevel.Warning, "Request memory was used after its request ended: it was rented by endpoint '{Route}' at {CallSite} (logged once per endpoint and call site; every use is counted in allochosting.stale_uses).", EventName = "StaleRequestMemoryUse")]
    public static partial void StaleRequestMemoryUse(this ILogger logger, string route, string callSite);

    [LoggerMessage(31, LogLevel.Warning, "Request arena diagnostics: {Mode}. Every rent captures its call site; Guard also makes released chunks inaccessible, so that a late access crashes the process. For development, not production.", EventName = "ArenaDiagnosticsOn")]
    public static partial void ArenaDiagnosticsOn(this ILogger logger, ArenaDiagnostics mode);
}
