using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Request arena pools built outside a server, as <c>AddSwitchableAllocators</c> builds them: the sample's
/// defaults (64 KiB chunks, 1 MiB per request, clearing of what a request used), with or without clearing,
/// without the quarantine of released chunks.
/// No listener is attached to their meters.
/// </summary>
internal static class BenchmarkArenaPools
{
    public static RequestArenaPool Create(ArenaClearPolicy clear)
    {
        // No ReuseDelay: a loop this tight would hold the whole budget in the quarantine and measure its
        // early-reuse path (RequestArenaBenchmarks has that row); HTTP load runs use the defaults.
        var options = new SwitchableAllocatorOptions { ClearPolicy = clear, ReuseDelay = TimeSpan.Zero };
        return new(
            Options.Create(options),
            ArenaChunkSource.ForThisMachine(options, NullLogger.Instance),
            new AllocHostingMetrics(new UnlistenedMeterFactory(), new SwitchableAllocator()),
            NullLogger<RequestArenaPool>.Instance,
            TimeProvider.System);
    }

    private sealed class UnlistenedMeterFactory : IMeterFactory
    {
        public Meter Create(MeterOptions options) => new(options.Name, options.Version, options.Tags, scope: this);

        public void Dispose()
        {
        }
    }
}
