using AllocHosting;

namespace OpenTelemetry.Metrics;

/// <summary>The OpenTelemetry hook for the <c>AllocHosting</c> meter.</summary>
public static class SwitchableAllocatorsMeterProviderBuilderExtensions
{
    /// <summary>Listens to the <c>AllocHosting</c> meter (request arena usage, allocated, live and mapped bytes, failures, rejections).</summary>
    /// <param name="builder">The meter provider builder.</param>
    /// <returns><paramref name="builder"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="builder"/> is null.</exception>
    public static MeterProviderBuilder AddSwitchableAllocatorsInstrumentation(this MeterProviderBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.AddMeter(AllocHostingMetrics.MeterName);
    }
}
