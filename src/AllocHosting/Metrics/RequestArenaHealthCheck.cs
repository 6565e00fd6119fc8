using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace AllocHosting;

/// <summary>
/// Reports the request arena budget: Healthy while the share of the budget's bytes held by
/// requests (pool and large chunks at their full sizes) stays below
/// <see cref="SwitchableAllocatorOptions.HealthDegradedRatio"/>, Degraded when it reaches it or
/// when requests were rejected for lack of memory since the previous check.
/// </summary>
internal sealed class RequestArenaHealthCheck(RequestArenaPool pool) : IHealthCheck
{
    public const string Name = "allochosting";

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        int chunksInUse = pool.ChunksInUse;
        long inUse = pool.BytesInUse;
        long budget = pool.Options.MemoryBudget;
        long rejected = pool.TakeRejectedCount();
        double ratio = (double)inUse / budget;
        var data = new Dictionary<string, object>
        {
            ["chunksInUse"] = chunksInUse,
            ["bytesInUse"] = inUse,
            ["budgetBytes"] = budget,
            ["chunkSize"] = pool.ChunkSize,
            ["rejectedSinceLastCheck"] = rejected,
        };
        string summary = string.Create(CultureInfo.InvariantCulture, $"{inUse} of {budget} budget bytes in use ({ratio:P0}, {chunksInUse} chunks); {rejected} requests rejected since the last check.");
        HealthCheckResult result = ratio >= pool.Options.HealthDegradedRatio || rejected > 0
            ? HealthCheckResult.Degraded(summary, data: data)
            : HealthCheckResult.Healthy(summary, data);
        return Task.FromResult(result);
    }
}
