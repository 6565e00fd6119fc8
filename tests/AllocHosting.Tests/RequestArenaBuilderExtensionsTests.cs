using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

public class RequestArenaBuilderExtensionsTests
{
    [Fact]
    public async Task UseRequestArena_places_the_middleware_there_and_the_start_up_filter_adds_none()
    {
        var seenBefore = new List<bool>();
        int arenasSeen = 0;
        await using var app = await TestApp.StartAsync(a =>
        {
            a.Use((context, next) =>
            {
                seenBefore.Add(context.Features.Get<IRequestArenaFeature>() is not null);
                return next(context);
            });
            a.UseRequestArena();
            a.Use((context, next) =>
            {
                // A second arena (middleware running twice) would replace the feature with another object.
                if (context.Features.Get<IRequestArenaFeature>() is { } feature)
                {
                    Interlocked.Increment(ref arenasSeen);
                    context.Items["arena"] = feature;
                }

                return next(context);
            });
            a.MapGet("/", (HttpContext context, IRequestBuffers buffers) =>
            {
                buffers.Rent(10);
                return ReferenceEquals(context.Items["arena"], context.Features.Get<IRequestArenaFeature>()) ? "same" : "different";
            });
        });

        Assert.Equal("same", await app.Client.GetStringAsync("/"));
        Assert.Equal([false], seenBefore);
        Assert.Equal(1, arenasSeen);
    }

    [Fact]
    public async Task UseRequestArena_twice_throws()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => TestApp.StartAsync(a =>
        {
            a.UseRequestArena();
            a.UseRequestArena();
        }));

        Assert.Contains("twice", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UseRequestArena_without_AddSwitchableAllocators_throws_a_clear_message()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        await using WebApplication app = builder.Build();

        var error = Assert.Throws<InvalidOperationException>(() => app.UseRequestArena());

        Assert.Contains("AddSwitchableAllocators", error.Message, StringComparison.Ordinal);
    }
}
