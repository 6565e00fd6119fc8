using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace AllocHosting;

/// <summary>
/// Reports the request arena budget: Healthy while the share of chunks in use stays below
/// <see cref="SwitchableAllocatorOptions.HealthDegradedRatio"/>, Degraded when it reaches it or
/// when requests were rejected for lack of memory since the previous check.
/// </summary>
internal sealed class RequestArenaHealthCheck(RequestArenaPool pool) : IHealthCheck
{
    public const string Name = "allochosting";

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        int inUse = pool.ChunksInUse;
        int budget = pool.MaxChunks;
        long rejected = pool.TakeRejectedCount();
        double ratio = (double)inUse / budget;
        var data = new Dictionary<string, object>
        {
            ["chunksInUse"] = inUse,
            ["chunkBudget"] = budget,
            ["chunkSize"] = pool.ChunkSize,
            ["rejectedSinceLastCheck"] = rejected,
        };
        string summary = string.Create(CultureInfo.InvariantCulture, $"{inUse} of {budget} arena chunks in use ({ratio:P0}); {rejected} requests rejected since the last check.");
        HealthCheckResult result = ratio >= pool.Options.HealthDegradedRatio || rejected > 0
            ? HealthCheckResult.Degraded(summary, data: data)
            : HealthCheckResult.Healthy(summary, data);
        return Task.FromResult(result);
    }
}
