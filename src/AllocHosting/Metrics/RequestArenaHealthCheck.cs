using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace AllocHosting;

/// <summary>
/// Reports the request arena budget: Healthy while the share of the budget's bytes held by
/// requests (pool and large chunks at their full sizes) stays below
/// <see cref="SwitchableAllocatorOptions.HealthDegradedRatio"/>, Degraded when it reaches it or
/// while the last request rejected for lack of memory is less than <see cref="RejectionWindow"/> ago.
/// Its data also gives the rents waiting for memory now (<c>waitingRents</c>). A rejection counts
/// whether it answered 503 or, after the response had started, aborted the request.
/// </summary>
/// <remarks>
/// Reading the check changes nothing, so liveness and readiness probes (and any other reader) that
/// ask at the same moment get the same answer.
/// </remarks>
internal sealed class RequestArenaHealthCheck(RequestArenaPool pool) : IHealthCheck
{
    public const string Name = "allochosting";

    /// <summary>How long a rejection keeps the check Degraded: 30 seconds.</summary>
    public static readonly TimeSpan RejectionWindow = TimeSpan.FromSeconds(30);

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        int chunksInUse = pool.ChunksInUse;
        long inUse = pool.BytesInUse;
        long budget = pool.Options.MemoryBudget;
        long rejected = pool.RejectedCount;
        TimeSpan? sinceRejection = pool.SinceLastRejection;
        double ratio = (double)inUse / budget;
        bool recentlyRejected = sinceRejection < RejectionWindow;
        var data = new Dictionary<string, object>
        {
            ["chunksInUse"] = chunksInUse,
            ["bytesInUse"] = inUse,
            ["budgetBytes"] = budget,
            ["chunkSize"] = pool.ChunkSize,
            ["rejectedTotal"] = rejected,
            ["waitingRents"] = pool.WaitingRents,
        };
        if (sinceRejection is { } since)
        {
            data["secondsSinceLastRejection"] = Math.Round(since.TotalSeconds, 1);
        }

        string rejections = sinceRejection is { } ago
            ? string.Create(CultureInfo.InvariantCulture, $"{rejected} requests rejected since start, the last {ago.TotalSeconds:F0} s ago")
            : "no request rejected since start";
        string summary = string.Create(CultureInfo.InvariantCulture, $"{inUse} of {budget} budget bytes in use ({ratio:P0}, {chunksInUse} chunks); {rejections}.");
        HealthCheckResult result = ratio >= pool.Options.HealthDegradedRatio || recentlyRejected
            ? HealthCheckResult.Degraded(summary, data: data)
            : HealthCheckResult.Healthy(summary, data);
        return Task.FromResult(result);
    }
}
