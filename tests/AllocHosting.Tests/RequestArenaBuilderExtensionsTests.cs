using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

public class RequestArenaBuilderExtensionsTests
{
    [Fact]
    public async Task UseRequestArena_places_the_middleware_there_and_the_start_up_filter_adds_none()
    {
        var seenBefore = new List<bool>();
        int arenasSeen = 0;
        var activator = new CountingActivator();
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
        }, build: builder => builder.Services.AddSingleton<IRequestArenaActivator>(activator));

        Assert.Equal("same", await app.Client.GetStringAsync("/"));
        Assert.Equal([false], seenBefore);
        Assert.Equal(1, arenasSeen);

        // The middleware ran once: one activation for the one request.
        Assert.Equal(1, activator.Activations);
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

    private sealed class CountingActivator : IRequestArenaActivator
    {
        private int _activations;

        public int Activations => Volatile.Read(ref _activations);

        public IDisposable? Activate(RequestArena arena)
        {
            Interlocked.Increment(ref _activations);
            return null;
        }
    }
}
