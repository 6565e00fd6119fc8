using System.Runtime.CompilerServices;
using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Options;

namespace AllocHosting.Tests;

/// <summary>
/// Option Diagnostics: Off leaves the stale-use message as it was; Track names the route and the call site
/// of the very rent a stale memory came from, logs once per (route, call site) and counts every stale use;
/// the option is validated and bound from configuration.
/// </summary>
[Collection(MeterListenerCollection.Name)]
public class ArenaDiagnosticsTests
{
    private const string Route = "/items/{id}";

    [Fact]
    public void Off_keeps_the_plain_message_and_records_nothing()
    {
        using var meters = new TestMeterFactory();
        using var staleUses = new MetricCollector<long>(meters, AllocHostingMetrics.MeterName, AllocHostingMetrics.StaleUsesInstrument);
        var logs = new FakeLogCollector();
        using RequestArenaPool pool = CreatePool(ArenaDiagnostics.Off, meters, logs);
        HttpContext context = RoutedContext();

        RequestArena arena = pool.RentArena(context);
        Memory<byte> kept = RentForTheItem(arena);
        pool.ReturnArena(arena, context);

        var error = Assert.Throws<ObjectDisposedException>(() => kept.Span.Fill(1));
        Assert.StartsWith("This memory was rented from a request arena that has since been released (the request ended); it must no longer be used.", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("rented by", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(Route, error.Message, StringComparison.Ordinal);
        Assert.Empty(staleUses.GetMeasurementSnapshot());
        Assert.DoesNotContain(logs.GetSnapshot(), r => r.Level == LogLevel.Warning);
    }

    [Fact]
    public void Track_names_the_route_and_the_call_site_of_the_rent_the_stale_memory_came_from()
    {
        using var meters = new TestMeterFactory();
        using RequestArenaPool pool = CreatePool(ArenaDiagnostics.Track, meters, new FakeLogCollector());
        HttpContext context = RoutedContext();

        // Several rents from one chunk use, from two call sites: each memory names its own.
        RequestArena arena = pool.RentArena(context);
        Memory<byte> first = RentForTheItem(arena);
        Memory<int> second = RentValuesForTheItem(arena);
        Memory<byte> third = RentForTheItem(arena);
        first.Span.Fill(1);
        second.Span.Fill(2);
        Assert.True(third.Span.IndexOfAnyExcept((byte)0) < 0, "a tracked rent is fresh memory");
        pool.ReturnArena(arena, context);

        var error = Assert.Throws<ObjectDisposedException>(() => first.Span.Fill(1));
        Assert.Contains($"It was rented by endpoint '{Route}' at AllocHosting.Tests.ArenaDiagnosticsTests.{nameof(RentForTheItem)} in ArenaDiagnosticsTests.cs:line ", error.Message, StringComparison.Ordinal);

        // A typed rent, a slice and a pin name the rent they came from too.
        error = Assert.Throws<ObjectDisposedException>(() => second[1..].Span[0] = 3);
        Assert.Contains($"at AllocHosting.Tests.ArenaDiagnosticsTests.{nameof(RentValuesForTheItem)} in ", error.Message, StringComparison.Ordinal);
        error = Assert.Throws<ObjectDisposedException>(() => third.Pin());
        Assert.Contains($"{nameof(RentForTheItem)} in ", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Track_logs_once_per_route_and_call_site_and_counts_every_stale_use()
    {
        using var meters = new TestMeterFactory();
        using var staleUses = new MetricCollector<long>(meters, AllocHostingMetrics.MeterName, AllocHostingMetrics.StaleUsesInstrument);
        var logs = new FakeLogCollector();
        using RequestArenaPool pool = CreatePool(ArenaDiagnostics.Track, meters, logs);

        var kept = new List<Memory<byte>>();
        for (int request = 0; request < 3; request++)
        {
            HttpContext context = RoutedContext();
            RequestArena arena = pool.RentArena(context);
            kept.Add(RentForTheItem(arena));
            kept.Add(RentForTheItem(arena));
            if (request == 0)
            {
                kept.Add(arena.Rent(8));   // a second site: this test method
            }

            pool.ReturnArena(arena, context);
        }

        int uses = 0;
        foreach (Memory<byte> memory in kept)
        {
            for (int i = 0; i < 2; i++)
            {
                Assert.Throws<ObjectDisposedException>(() => memory.Span[0] = 1);
                uses++;
            }
        }

        Assert.Equal(14, uses);
        IReadOnlyList<CollectedMeasurement<long>> counted = staleUses.GetMeasurementSnapshot();
        Assert.Equal(uses, counted.Sum(m => m.Value));
        Assert.All(counted, m => Assert.Equal(Route, m.Tags[AllocHostingMetrics.RouteTag]));

        // Two call sites used stale (RentForTheItem and this method): two warnings, not fourteen.
        var warnings = logs.GetSnapshot().Where(r => r.Level == LogLevel.Warning && r.Id.Name == "StaleRequestMemoryUse").ToList();
        Assert.Equal(2, warnings.Count);
        Assert.Contains(warnings, w => w.Message.Contains($"ArenaDiagnosticsTests.{nameof(RentForTheItem)} in ", StringComparison.Ordinal));
        Assert.Contains(warnings, w => w.Message.Contains($"ArenaDiagnosticsTests.{nameof(Track_logs_once_per_route_and_call_site_and_counts_every_stale_use)} in ", StringComparison.Ordinal));
        Assert.All(warnings, w => Assert.Contains($"endpoint '{Route}'", w.Message, StringComparison.Ordinal));
    }

    [Fact]
    public async Task On_a_server_Track_names_the_endpoints_route_and_the_handler_that_rented()
    {
        Memory<byte> kept = default;
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/orders/{id}/lines", (IRequestBuffers buffers) =>
            {
                kept = buffers.Rent(64);
                kept.Span.Fill(7);
                return "ok";
            }),
            options => options.Diagnostics = ArenaDiagnostics.Track);

        Assert.Equal("ok", await app.Client.GetStringAsync("/orders/5/lines"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");

        var error = Assert.Throws<ObjectDisposedException>(() => kept.Span.Fill(1));
        Assert.Contains("endpoint '/orders/{id}/lines' at ", error.Message, StringComparison.Ordinal);
#if DEBUG
        Assert.Contains("AllocHosting.Tests.ArenaDiagnosticsTests.", error.Message, StringComparison.Ordinal);
        Assert.Contains($"{nameof(On_a_server_Track_names_the_endpoints_route_and_the_handler_that_rented)} (lambda)", error.Message, StringComparison.Ordinal);
#else
        // An optimised build may inline the handler into the request delegate ASP.NET Core compiles for it.
        Assert.True(
            error.Message.Contains($"{nameof(On_a_server_Track_names_the_endpoints_route_and_the_handler_that_rented)} (lambda)", StringComparison.Ordinal)
            || error.Message.Contains("the endpoint's compiled request delegate", StringComparison.Ordinal),
            error.Message);
#endif
    }

    [Fact]
    public async Task Diagnostics_is_bound_from_configuration_and_validated()
    {
        await using (var app = await TestApp.StartAsync(_ => { }, build: b => b.Configuration["SwitchableAllocators:Diagnostics"] = "Guard"))
        {
            Assert.Equal(ArenaDiagnostics.Guard, app.Services.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value.Diagnostics);
        }

        Assert.Equal(ArenaDiagnostics.Off, new SwitchableAllocatorOptions().Diagnostics);
        var validator = new SwitchableAllocatorOptionsValidator();
        Assert.True(validator.Validate(null, new SwitchableAllocatorOptions { Diagnostics = ArenaDiagnostics.Track }).Succeeded);
        ValidateOptionsResult result = validator.Validate(null, new SwitchableAllocatorOptions { Diagnostics = (ArenaDiagnostics)7 });
        Assert.True(result.Failed);
        Assert.Contains("SwitchableAllocators:Diagnostics is 7; allowed: Off, Track, Guard.", result.FailureMessage, StringComparison.Ordinal);
    }

    [Fact]
    public void An_arena_scope_is_named_as_such()
    {
        using var meters = new TestMeterFactory();
        using RequestArenaPool pool = CreatePool(ArenaDiagnostics.Track, meters, new FakeLogCollector());
        RequestArena arena = pool.RentArena(null);
        Memory<byte> kept = RentForTheItem(arena);
        pool.ReturnArena(arena, null);

        var error = Assert.Throws<ObjectDisposedException>(() => kept.Span.Fill(1));
        Assert.Contains("endpoint '(arena scope)' at ", error.Message, StringComparison.Ordinal);
    }

    internal static RequestArenaPool CreatePool(ArenaDiagnostics mode, TestMeterFactory meters, FakeLogCollector logs, IMemorySource? memory = null, TimeSpan? reuseDelay = null)
    {
        var options = new SwitchableAllocatorOptions
        {
            MemoryBudget = 8 * 64 * 1024,
            MaxArenaSizePerRequest = 4 * 64 * 1024,
            ReuseDelay = reuseDelay ?? TimeSpan.Zero,
            IdleTrimInterval = TimeSpan.FromHours(1),
            Diagnostics = mode,
        };
        var chunks = new ArenaChunkSource(options, memory ?? NativeMemorySource.Shared);
        return new RequestArenaPool(
            Microsoft.Extensions.Options.Options.Create(options), chunks, new AllocHostingMetrics(meters, new SwitchableAllocator()), new FakeLogger<RequestArenaPool>(logs), TimeProvider.System);
    }

    private static DefaultHttpContext RoutedContext()
    {
        var context = new DefaultHttpContext();
        context.SetEndpoint(new RouteEndpoint(_ => Task.CompletedTask, RoutePatternFactory.Parse(Route), 0, EndpointMetadataCollection.Empty, "items"));
        return context;
    }

    // Call sites of their own (not inlined, so that they are frames): the stale memory's message names the method that rented it.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Memory<byte> RentForTheItem(RequestArena arena) => arena.Rent(100);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Memory<int> RentValuesForTheItem(RequestArena arena) => arena.Rent<int>(10);
}
