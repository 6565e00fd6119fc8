namespace AllocHosting.Tests;

/// <summary>
/// Test classes whose listeners or probes see instruments by meter and instrument name: they run one
/// after the other, since a collector enabling an instrument of one test's app would show as a listener
/// to another test's probe of <c>Instrument.Enabled</c>.
/// </summary>
[CollectionDefinition(Name)]
public sealed class MeterListenerCollection
{
    public const string Name = "Meter listeners";
}
