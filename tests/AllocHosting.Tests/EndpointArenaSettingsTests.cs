using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>Per-endpoint arena settings: WithRequestArena/DisableRequestArena on minimal APIs, the attributes on MVC controllers and actions, and their validation.</summary>
public sealed class EndpointArenaSettingsTests
{
    private const int K = 1024;

    // Rents `times` pieces of 16 KiB and answers "ok", or the message of what the rents threw.
    private static string RentPieces(IRequestBuffers buffers, int times)
    {
        try
        {
            for (int i = 0; i < times; i++)
            {
                buffers.Rent(16 * K).Span.Fill(1);
            }

            return "ok";
        }
        catch (Exception e) when (e is InvalidOperationException or InsufficientMemoryException)
        {
            return Refusal(e);
        }
    }

    // What an endpoint answers when its arena refuses: the exception's type and message.
    private static string Refusal(Exception e) => e.GetType().Name + ": " + e.Message;

    // As RentPieces, for work that rents asynchronously.
    private static async Task<string> OutcomeAsync(Func<Task> work)
    {
        try
        {
            await work();
            return "ok";
        }
        catch (Exception e) when (e is InvalidOperationException or InsufficientMemoryException)
        {
            return Refusal(e);
        }
    }

    [Fact]
    public async Task An_endpoint_that_disabled_arenas_gets_an_InvalidOperationException_naming_it_and_others_still_rent()
    {
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapGet("/no-arena", (IRequestBuffers buffers) => RentPieces(buffers, 1)).DisableRequestArena().WithDisplayName("no-arena endpoint");
            a.MapGet("/arena", (IRequestBuffers buffers) => RentPieces(buffers, 1));
        });

        string refused = await app.Client.GetStringAsync("/no-arena");
        Assert.StartsWith("InvalidOperationException", refused, StringComparison.Ordinal);
        Assert.Contains("'no-arena endpoint'", refused, StringComparison.Ordinal);
        Assert.Contains("disabled", refused, StringComparison.Ordinal);
        Assert.Equal("ok", await app.Client.GetStringAsync("/arena"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the requests released");
    }

    [Fact]
    public async Task An_endpoints_maximum_and_overflow_policy_apply_to_its_requests_only()
    {
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/strict", (IRequestBuffers buffers) => RentPieces(buffers, 12))
                    .WithRequestArena(o =>
                    {
                        o.MaxArenaSizePerRequest = 128 * K;
                        o.OverflowPolicy = ArenaOverflowPolicy.Fail;
                    });
                a.MapGet("/lenient", (IRequestBuffers buffers) => RentPieces(buffers, 12));
            },
            options =>
            {
                options.ReuseDelay = TimeSpan.Zero;
                options.AdaptiveFirstChunk = false;
            });

        string strict = await app.Client.GetStringAsync("/strict");
        Assert.StartsWith("InsufficientMemoryException", strict, StringComparison.Ordinal);
        Assert.Contains("/strict", strict, StringComparison.Ordinal);
        Assert.Contains("131072", strict, StringComparison.Ordinal);
        Assert.Equal("ok", await app.Client.GetStringAsync("/lenient"));   // 192 KiB within the global 1 MiB
    }

    [Fact]
    public async Task An_endpoints_settings_apply_to_asynchronous_rents_and_body_reads_too()
    {
        // RentAsync, ReadBodyAsync, the stream and the writers rent through the waiting path: a
        // request whose first chunk comes that way must resolve its endpoint's settings as a
        // synchronous rent does (they were ignored there before).
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/no-arena", (IRequestBuffers buffers) => OutcomeAsync(async () => await buffers.RentAsync(16 * K)))
                    .DisableRequestArena().WithDisplayName("no-arena endpoint");
                a.MapGet("/no-arena-stream", (IRequestBuffers buffers) => OutcomeAsync(async () => await buffers.CreateStream().WriteAsync(new byte[16 * K])))
                    .DisableRequestArena();
                a.MapPost("/strict", (IRequestBuffers buffers) => OutcomeAsync(async () => await buffers.ReadBodyAsync()))
                    .WithRequestArena(o =>
                    {
                        o.MaxArenaSizePerRequest = 128 * K;
                        o.OverflowPolicy = ArenaOverflowPolicy.Fail;
                    });
                a.MapPost("/lenient", (IRequestBuffers buffers) => OutcomeAsync(async () => await buffers.ReadBodyAsync()));
            },
            options =>
            {
                options.ReuseDelay = TimeSpan.Zero;
                options.AdaptiveFirstChunk = false;
            });

        string disabled = await app.Client.GetStringAsync("/no-arena");
        Assert.StartsWith("InvalidOperationException", disabled, StringComparison.Ordinal);
        Assert.Contains("disabled", disabled, StringComparison.Ordinal);
        string disabledStream = await app.Client.GetStringAsync("/no-arena-stream");
        Assert.StartsWith("InvalidOperationException", disabledStream, StringComparison.Ordinal);
        Assert.Contains("disabled", disabledStream, StringComparison.Ordinal);

        byte[] body = new byte[300 * K];
        using HttpResponseMessage strict = await app.Client.PostAsync("/strict", new ByteArrayContent(body));
        string strictOutcome = await strict.Content.ReadAsStringAsync();
        Assert.StartsWith("InsufficientMemoryException", strictOutcome, StringComparison.Ordinal);
        Assert.Contains("131072", strictOutcome, StringComparison.Ordinal);

        using HttpResponseMessage lenient = await app.Client.PostAsync("/lenient", new ByteArrayContent(body));
        Assert.Equal("ok", await lenient.Content.ReadAsStringAsync());   // 300 KiB within the global 1 MiB
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the requests released");
    }

    [Fact]
    public async Task A_larger_endpoint_maximum_lets_its_requests_hold_more_before_the_policy()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/big", (IRequestBuffers buffers) => RentPieces(buffers, 12)).WithRequestArena(o => o.MaxArenaSizePerRequest = 256 * K),
            options =>
            {
                options.MaxArenaSizePerRequest = 64 * K;
                options.OverflowPolicy = ArenaOverflowPolicy.Fail;
                options.ReuseDelay = TimeSpan.Zero;
            });

        Assert.Equal("ok", await app.Client.GetStringAsync("/big"));
    }

    [Theory]
    [InlineData("first", "FirstChunkSize is 100")]
    [InlineData("max", "MaxArenaSizePerRequest is 1")]
    [InlineData("clear", "ClearPolicy is None")]
    public async Task Invalid_endpoint_settings_fail_the_start_with_a_message_naming_the_endpoint_and_the_setting(string which, string expected)
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await using var app = await TestApp.StartAsync(a =>
            {
                a.MapGet("/fine", (IRequestBuffers buffers) => RentPieces(buffers, 1)).WithRequestArena(o => o.FirstChunkSize = 16 * K);
                a.MapGet("/bad", (IRequestBuffers buffers) => RentPieces(buffers, 1)).WithRequestArena(o =>
                {
                    switch (which)
                    {
                        case "first": o.FirstChunkSize = 100; break;
                        case "max": o.MaxArenaSizePerRequest = 1; break;
                        default: o.ClearPolicy = ArenaClearPolicy.None; break;
                    }
                });
            });
        });

        Assert.Contains("endpoint '", error.Message, StringComparison.Ordinal);
        Assert.Contains("/bad", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("/fine", error.Message, StringComparison.Ordinal);
        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Every_invalid_endpoint_is_named_in_the_one_start_error()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await using var app = await TestApp.StartAsync(a =>
            {
                a.MapGet("/bad-one", () => "x").WithRequestArena(o => o.FirstChunkSize = 100);
                a.MapGet("/bad-two", () => "x").WithRequestArena(o => o.MaxArenaSizePerRequest = 1);
            });
        });

        Assert.Contains("/bad-one", error.Message, StringComparison.Ordinal);
        Assert.Contains("/bad-two", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_endpoint_added_after_the_start_with_invalid_settings_fails_its_rents_naming_it()
    {
        // Endpoints a data source adds after the start are not in the start-up check: their first
        // rent is, with the same message, and nothing is held.
        var late = new LateEndpointDataSource();
        await using var app = await TestApp.StartAsync(a => ((IEndpointRouteBuilder)a).DataSources.Add(late));
        late.Add(
            "/late-bad",
            context => context.Response.WriteAsync(RentPieces(context.RequestServices.GetRequiredService<IRequestBuffers>(), 1)),
            new RequestArenaEndpointMetadata(new RequestArenaEndpointOptions { MaxArenaSizePerRequest = 1 }, disables: false));

        string message = await app.Client.GetStringAsync("/late-bad");
        Assert.StartsWith("InvalidOperationException", message, StringComparison.Ordinal);
        Assert.Contains("/late-bad", message, StringComparison.Ordinal);
        Assert.Contains("MaxArenaSizePerRequest is 1", message, StringComparison.Ordinal);
        Assert.Equal(0, app.Pool.ChunksInUse);
    }

    [Fact]
    public async Task An_endpoint_may_add_clearing_when_the_global_policy_does_not_clear()
    {
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/secret", (IRequestBuffers buffers) => { buffers.Rent(4000).Span.Fill(0x5A); return "ok"; })
                    .WithRequestArena(o => o.ClearPolicy = ArenaClearPolicy.ClearUsed);
                a.MapGet("/plain", (IRequestBuffers buffers) => { buffers.Rent(4000).Span.Fill(0x5B); return "ok"; });
                a.MapGet("/peek", (IRequestBuffers buffers) => buffers.Rent(4000).Span.IndexOfAnyExcept((byte)0) < 0 ? "zero" : "dirty");
            },
            options =>
            {
                options.ClearPolicy = ArenaClearPolicy.None;
                options.ReuseDelay = TimeSpan.Zero;
            });

        // Sequential requests on the test server: the next request of the same processor usually gets
        // the chunk back; the dirty case shows the chunk did come back, so the zero case is meaningful.
        bool sawDirty = false;
        for (int i = 0; i < 20 && !sawDirty; i++)
        {
            await app.Client.GetStringAsync("/plain");
            await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "released");
            sawDirty = await app.Client.GetStringAsync("/peek") == "dirty";
            await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "released");
        }

        for (int i = 0; i < 20; i++)
        {
            await app.Client.GetStringAsync("/secret");
            await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "released");
            Assert.Equal("zero", await app.Client.GetStringAsync("/peek"));
            await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "released");
        }

        Assert.True(sawDirty, "the chunk never came back to the next request: the test shows nothing");
    }

    [Fact]
    public async Task Mvc_action_attributes_win_over_the_controllers_and_the_controllers_over_the_global_options()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapControllers(),
            options => options.ReuseDelay = TimeSpan.Zero,
            build: builder => builder.Services.AddControllers().AddApplicationPart(typeof(EndpointArenaSettingsTests).Assembly));

        Assert.StartsWith("InvalidOperationException", await app.Client.GetStringAsync("/mvc-arena/inherited"), StringComparison.Ordinal);
        Assert.Equal("ok", await app.Client.GetStringAsync("/mvc-arena/enabled"));
        string strict = await app.Client.GetStringAsync("/mvc-arena/strict");
        Assert.StartsWith("InsufficientMemoryException", strict, StringComparison.Ordinal);
        Assert.Contains("65536", strict, StringComparison.Ordinal);
    }

    [Fact]
    public void Metadata_applies_in_order_setting_by_setting_and_the_last_disable_or_enable_wins()
    {
        var options = new SwitchableAllocatorOptions();
        Endpoint endpoint = new(
            _ => Task.CompletedTask,
            new EndpointMetadataCollection(
                new RequestArenaAttribute { MaxArenaSizePerRequest = 512 * K, OverflowPolicy = ArenaOverflowPolicy.Fail },
                new DisableRequestArenaAttribute(),
                new RequestArenaAttribute { FirstChunkSize = 128 * K }),
            "ordered");

        EndpointArenaProfile profile = EndpointArenaProfile.Create(endpoint, options);

        Assert.False(profile.Disabled);
        Assert.Null(profile.Error);
        Assert.Equal(512 * K, profile.MaxBytes);
        Assert.Equal(ArenaOverflowPolicy.Fail, profile.OverflowPolicy);
        Assert.Equal(128 * K, profile.FirstChunkBytes);
        Assert.False(profile.Adaptive);
        Assert.Equal("ordered", profile.Name);
        Assert.Null(profile.Route);
    }

    [Fact]
    public void An_endpoint_without_settings_keeps_the_global_options()
    {
        var options = new SwitchableAllocatorOptions { MaxArenaSizePerRequest = 2 * K * K, OverflowPolicy = ArenaOverflowPolicy.Fail, AdaptiveFirstChunk = false };
        EndpointArenaProfile profile = EndpointArenaProfile.Create(new Endpoint(_ => Task.CompletedTask, EndpointMetadataCollection.Empty, null), options);

        Assert.Equal(2 * K * K, profile.MaxBytes);
        Assert.Equal(ArenaOverflowPolicy.Fail, profile.OverflowPolicy);
        Assert.False(profile.Adaptive);
        Assert.Equal(0, profile.FirstChunkBytes);
        Assert.False(profile.ClearOnRelease);
    }

    [Fact]
    public void The_profiles_are_bounded_in_the_number_of_endpoints_tracked()
    {
        var profiles = new EndpointArenaProfiles(new SwitchableAllocatorOptions());
        for (int i = 0; i < EndpointArenaProfiles.MaxTrackedEndpoints + 50; i++)
        {
            var context = new DefaultHttpContext();
            context.SetEndpoint(new Endpoint(_ => Task.CompletedTask, EndpointMetadataCollection.Empty, "e" + i));
            Assert.NotNull(profiles.Resolve(context));
        }

        Assert.Equal(EndpointArenaProfiles.MaxTrackedEndpoints, profiles.Count);
        Assert.Null(profiles.Resolve(new DefaultHttpContext()));   // no endpoint: the global options
        Assert.Null(profiles.Resolve(null));                       // a scope
    }
}

/// <summary>The controller of <see cref="EndpointArenaSettingsTests"/>: arenas disabled on the controller, enabled again or tightened on actions.</summary>
[ApiController]
[Route("mvc-arena")]
[DisableRequestArena]
public sealed class EndpointArenaSettingsController(IRequestBuffers buffers) : ControllerBase
{
    [HttpGet("inherited")]
    public string Inherited() => Rent(1);

    [HttpGet("enabled")]
    [RequestArena]
    public string Enabled() => Rent(1);

    [HttpGet("strict")]
    [RequestArena(MaxArenaSizePerRequest = 64 * 1024, OverflowPolicy = ArenaOverflowPolicy.Fail, AdaptiveFirstChunk = false)]
    public string Strict() => Rent(8);

    private string Rent(int pieces)
    {
        try
        {
            for (int i = 0; i < pieces; i++)
            {
                buffers.Rent(16 * 1024).Span.Fill(1);
            }

            return "ok";
        }
        catch (Exception e) when (e is InvalidOperationException or InsufficientMemoryException)
        {
            return e.GetType().Name + ": " + e.Message;
        }
    }
}
