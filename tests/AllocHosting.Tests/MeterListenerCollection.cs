namespace AllocHosting.Tests;

/// <summary>
/// Test classes that listen to instruments by meter name, or probe whether anything listens: they run
/// one after the other. The in-process sample (<see cref="SampleTests"/>) has an OpenTelemetry meter
/// provider, which enables every instrument of every meter named <c>AllocHosting</c> in the process,
/// so while it runs a probe of another app's <c>Instrument.Enabled</c> would see it as a listener.
/// </summary>
[CollectionDefinition(Name)]
public sealed class MeterListenerCollection
{
    public const string Name = "Meter listeners";
}
