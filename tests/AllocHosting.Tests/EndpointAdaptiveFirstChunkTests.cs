using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;

namespace AllocHosting.Tests;

/// <summary>
/// The adaptive first chunk: an endpoint whose requests rent about 300 KiB chains five 64 KiB
/// chunks at first and, once its statistics have a few batches of requests, takes one large chunk
/// that holds it all; and the usage histogram and overflow counter carry <c>http.route</c>.
/// </summary>
[Collection(MeterListenerCollection.Name)]
public sealed class EndpointAdaptiveFirstChunkTests
{
    private const int K = 1024;
    private const int Requests = 64;

    private static MetricCollector<long> Collect(TestApp app, string instrument) =>
        new(app.Services.GetRequiredService<IMeterFactory>(), AllocHostingMetrics.MeterName, instrument);

    // GET /big/{id}: 19 rents of 16 KiB (304 KiB), answering the arena's capacity at the end.
    private static Task<TestApp> StartAsync(Action<SwitchableAllocatorOptions>? configure = null) =>
        TestApp.StartAsync(
            a => a.MapGet("/big/{id}", (IRequestBuffers buffers, int id) =>
            {
                for (int i = 0; i < 19; i++)
                {
                    buffers.Rent(16 * K).Span.Fill((byte)id);
                }

                return buffers.Capacity.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }),
            options =>
            {
                options.ReuseDelay = TimeSpan.Zero;
                configure?.Invoke(options);
            });

    private static async Task<long[]> RunAsync(TestApp app)
    {
        var capacities = new long[Requests];
        for (int i = 0; i < Requests; i++)
        {
            capacities[i] = long.Parse(await app.Client.GetStringAsync($"/big/{i}"), System.Globalization.CultureInfo.InvariantCulture);
            await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        }

        return capacities;
    }

    [Fact]
    public async Task An_endpoint_that_needs_300_KiB_stops_chaining_chunks_after_some_requests()
    {
        await using var app = await StartAsync();
        using var overflowed = Collect(app, AllocHostingMetrics.OverflowedInstrument);
        using var used = Collect(app, AllocHostingMetrics.UsedInstrument);

        long[] capacities = await RunAsync(app);

        // Before: five pool chunks of 64 KiB (304 KiB in 16 KiB pieces: four pieces a chunk).
        Assert.Equal(5 * app.Pool.ChunkCapacity, capacities[0]);
        // After the first batch of statistics: one chunk of the 512 KiB class holds the whole request.
        Assert.All(capacities[(2 * EndpointArenaProfile.RecomputeEvery)..], c => Assert.Equal(512 * K, c));

        var overflows = overflowed.GetMeasurementSnapshot();
        long overflowCount = overflows.Sum(m => m.Value);
        Assert.InRange(overflowCount, 1, EndpointArenaProfile.RecomputeEvery + 1);   // only the requests before the first recomputation chained
        Assert.All(overflows, m => Assert.Equal("/big/{id}", m.Tags[AllocHostingMetrics.HttpRouteTag]));
        Assert.All(used.GetMeasurementSnapshot(), m => Assert.Equal("/big/{id}", m.Tags[AllocHostingMetrics.HttpRouteTag]));
        Assert.Equal(Requests, used.GetMeasurementSnapshot().Count);
    }

    [Fact]
    public async Task The_adaptive_first_chunk_serves_an_asynchronous_first_rent_too()
    {
        // The same 304 KiB, every piece rented with RentAsync: the first chunk is taken on the asynchronous path.
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/big/{id}", async (IRequestBuffers buffers, int id) =>
            {
                for (int i = 0; i < 19; i++)
                {
                    (await buffers.RentAsync(16 * K)).Span.Fill((byte)id);
                }

                return buffers.Capacity.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }),
            options => options.ReuseDelay = TimeSpan.Zero);

        long[] capacities = await RunAsync(app);

        Assert.Equal(5 * app.Pool.ChunkCapacity, capacities[0]);
        Assert.All(capacities[(2 * EndpointArenaProfile.RecomputeEvery)..], c => Assert.Equal(512 * K, c));
    }

    [Fact]
    public async Task With_AdaptiveFirstChunk_off_every_request_chains_pool_chunks()
    {
        await using var app = await StartAsync(options => options.AdaptiveFirstChunk = false);
        using var overflowed = Collect(app, AllocHostingMetrics.OverflowedInstrument);

        long[] capacities = await RunAsync(app);

        Assert.All(capacities, c => Assert.Equal(5 * app.Pool.ChunkCapacity, c));
        Assert.Equal(Requests, overflowed.GetMeasurementSnapshot().Sum(m => m.Value));
    }

    [Fact]
    public async Task The_adaptive_first_chunk_stays_within_the_endpoints_maximum()
    {
        // 304 KiB would take the 512 KiB class, which does not fit a 384 KiB maximum: pool chunks stay.
        await using var app = await StartAsync(options => options.MaxArenaSizePerRequest = 384 * K);

        long[] capacities = await RunAsync(app);

        Assert.All(capacities, c => Assert.Equal(5 * app.Pool.ChunkCapacity, c));
    }

    [Fact]
    public async Task Under_budget_pressure_requests_keep_to_pool_chunks()
    {
        // A 512 KiB class would need more than half of a 768 KiB budget: the hint is not taken.
        await using var app = await StartAsync(options =>
        {
            options.MemoryBudget = 768 * K;
            options.MaxArenaSizePerRequest = 768 * K;
        });

        long[] capacities = await RunAsync(app);

        Assert.All(capacities, c => Assert.Equal(5 * app.Pool.ChunkCapacity, c));
    }

    [Fact]
    public void The_percentile_follows_recent_requests_in_power_of_two_buckets()
    {
        EndpointArenaProfile profile = EndpointArenaProfile.Create(
            new Microsoft.AspNetCore.Http.Endpoint(_ => Task.CompletedTask, Microsoft.AspNetCore.Http.EndpointMetadataCollection.Empty, "stats"),
            new SwitchableAllocatorOptions());
        Assert.Equal(0, profile.FirstChunkBytes);   // no statistics yet: a pool chunk

        for (int i = 0; i < EndpointArenaProfile.RecomputeEvery; i++)
        {
            profile.Record(i < 15 ? 300 * K : 2 * K * K);   // one outlier in sixteen stays above the 90th percentile
        }

        Assert.Equal(512 * K, profile.FirstChunkBytes);

        // The endpoint changes: after enough requests (the histogram halves every DecayEvery), small requests win.
        for (int i = 0; i < 4 * EndpointArenaProfile.DecayEvery; i++)
        {
            profile.Record(2 * K);
        }

        Assert.Equal(2 * K, profile.FirstChunkBytes);
    }
}
