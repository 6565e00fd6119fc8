using Microsoft.Extensions.Logging;

namespace AllocHosting;

internal static partial class AllocHostingLoggingExtensions
{
    [LoggerMessage(1, LogLevel.Debug, "Request arena pool ready: {Kind} chunks of {ChunkSize} bytes, budget {Budget} bytes ({MaxChunks} chunks), memory from {Source}.", EventName = "ArenaPoolCreated")]
    public static partial void ArenaPoolCreated(this ILogger logger, string kind, int chunkSize, long budget, int maxChunks, string source);

    [LoggerMessage(2, LogLevel.Warning, "The request arena budget of {Budget} bytes is spent: rents are refused (logged once until a chunk comes back).", EventName = "ArenaBudgetSpent")]
    public static partial void ArenaBudgetSpent(this ILogger logger, long budget);

    [LoggerMessage(3, LogLevel.Debug, "Request {TraceIdentifier} was rejected with 503: the request arena budget is spent.", EventName = "RequestRejected")]
    public static partial void RequestRejected(this ILogger logger, string traceIdentifier);

    [LoggerMessage(4, LogLevel.Debug, "Trimmed {Chunks} idle arena chunks and {Segments} empty segments; {Remaining} chunks remain.", EventName = "ArenaChunksTrimmed")]
    public static partial void ArenaChunksTrimmed(this ILogger logger, int chunks, int segments, int remaining);

    [LoggerMessage(5, LogLevel.Debug, "A rent of {Length} bytes went beyond the request's arena maximum and was served by another chunk of the pool, within its budget (overflow policy FallBack).", EventName = "ArenaOverflowFallback")]
    public static partial void ArenaOverflowFallback(this ILogger logger, long length);

    [LoggerMessage(6, LogLevel.Warning, "Arena memory source: {Message}", EventName = "MemorySourceDegraded")]
    public static partial void MemorySourceDegraded(this ILogger logger, string message);

    [LoggerMessage(20, LogLevel.Warning, "{Chunks} request arena chunks are still pinned at shutdown (an asynchronous operation never released a MemoryHandle of request memory); they stay mapped rather than be unmapped under it.", EventName = "PinnedChunksKeptAtShutdown")]
    public static partial void PinnedChunksKeptAtShutdown(this ILogger logger, int chunks);
}
