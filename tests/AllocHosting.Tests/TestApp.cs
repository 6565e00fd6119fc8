using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

/// <summary>A small application on the in-memory test server (the server WebApplicationFactory uses) with the one line and the endpoints a test maps.</summary>
internal sealed class TestApp : IAsyncDisposable
{
    private TestApp(WebApplication app)
    {
        App = app;
        Client = app.GetTestClient();
        Pool = app.Services.GetRequiredService<RequestArenaPool>();
        Chunks = app.Services.GetRequiredService<ArenaChunkSource>();
    }

    public WebApplication App { get; }

    public HttpClient Client { get; }

    public RequestArenaPool Pool { get; }

    /// <summary>The pool's chunks (a part of the pool, registered beside it): how many exist.</summary>
    public ArenaChunkSource Chunks { get; }

    /// <summary>Pool chunks idle now (that exist and no request holds).</summary>
    public int IdleChunkCount => Chunks.ChunkCount - Pool.ChunksInUse;

    public IServiceProvider Services => App.Services;

    public static async Task<TestApp> StartAsync(
        Action<WebApplication> map,
        Action<SwitchableAllocatorOptions>? configure = null,
        Action<WebApplicationBuilder>? build = null,
        string environment = "Production")
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = environment });
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        builder.Services.AddSwitchableAllocators(options =>
        {
            // Small, so that budget tests need few requests; the trim timer stays out of the way.
            options.MemoryBudget = 4 * 1024 * 1024;
            options.IdleTrimInterval = TimeSpan.FromHours(1);
            configure?.Invoke(options);
        });
        build?.Invoke(builder);
        WebApplication app = builder.Build();
        map(app);
        try
        {
            await app.StartAsync();
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }

        return new TestApp(app);
    }

    /// <summary>Maps <c>GET /rent?bytes=N&amp;times=K</c>: K rents (one by default) of N bytes each, each filled.</summary>
    public static void MapRent(WebApplication app) =>
        app.MapGet("/rent", (IRequestBuffers buffers, int bytes, int? times) =>
        {
            for (int i = 0; i < (times ?? 1); i++)
            {
                buffers.Rent(bytes).Span.Fill(1);
            }

            return "ok";
        });

    /// <summary>Waits (bounded) until the condition holds: the middleware releases after the response was sent.</summary>
    public static async Task EventuallyAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"Timed out waiting until {what}.");
            }

            await Task.Delay(5);
        }
    }

    public async ValueTask DisposeAsync()
    {
        Client.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}
