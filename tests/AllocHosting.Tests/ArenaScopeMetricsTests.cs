using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace AllocHosting.Tests;

/// <summary>Arena scopes in the <c>AllocHosting</c> meter: the same instruments as requests, told apart by <c>allochosting.arena.owner</c>.</summary>
[Collection(MeterListenerCollection.Name)]
public sealed class ArenaScopeMetricsTests
{
    private static MetricCollector<long> Collect(TestApp app, string instrument) =>
        new(app.Services.GetRequiredService<IMeterFactory>(), AllocHostingMetrics.MeterName, instrument);

    [Fact]
    public async Task Usage_and_overflows_carry_the_owner_request_or_scope()
    {
        await using var app = await TestApp.StartAsync(TestApp.MapRent);
        using var used = Collect(app, AllocHostingMetrics.UsedInstrument);
        using var overflowed = Collect(app, AllocHostingMetrics.OverflowedInstrument);

        await app.Client.GetStringAsync("/rent?bytes=1000");
        using (ArenaScope scope = app.Services.GetRequiredService<IArenaScopeFactory>().CreateScope())
        {
            scope.Rent(2000);
            scope.Rent(app.Pool.ChunkCapacity);   // a second chunk: an overflow
        }

        using (app.Services.GetRequiredService<IArenaScopeFactory>().CreateScope())
        {
            // Rents nothing: no usage sample, as for a request that rents nothing.
        }

        await TestApp.EventuallyAsync(() => used.GetMeasurementSnapshot().Count >= 2 && app.Pool.ChunksInUse == 0, "the request and the scope released");

        var samples = used.GetMeasurementSnapshot();
        Assert.Equal(2, samples.Count);
        var request = Assert.Single(samples, s => (string?)s.Tags[AllocHostingMetrics.ArenaOwnerTag] == "request");
        var scoped = Assert.Single(samples, s => (string?)s.Tags[AllocHostingMetrics.ArenaOwnerTag] == "scope");
        Assert.InRange(request.Value, 1000, 1100);
        Assert.True(scoped.Value >= 2000 + app.Pool.ChunkCapacity);
        Assert.Equal("bump", scoped.Tags[AllocHostingMetrics.ArenaKindTag]);

        var overflow = Assert.Single(overflowed.GetMeasurementSnapshot());
        Assert.Equal("scope", overflow.Tags[AllocHostingMetrics.ArenaOwnerTag]);
    }

    [Fact]
    public async Task A_scope_never_disposed_is_counted_in_allochosting_scope_leaked()
    {
        await using var app = await TestApp.StartAsync(TestApp.MapRent);
        using var leaked = Collect(app, "allochosting.scope.leaked");
        ArenaScopeFactory factory = app.Services.GetRequiredService<ArenaScopeFactory>();

        factory.CreateScope().Rent(10);
        factory.CreateScope();   // leaked without renting: still reported
        factory.CreateScope().Dispose();
        factory.Dispose();

        Assert.Equal(2, leaked.GetMeasurementSnapshot().Sum(m => m.Value));
        Assert.Equal(0, app.Pool.ActiveArenas);
    }
}
