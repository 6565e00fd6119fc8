using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

/// <summary>
/// A small application on a real Kestrel in this process, bound to 127.0.0.1 on two free ports: one for
/// HTTP/1.1 and one for cleartext HTTP/2 (which needs an endpoint with <c>Protocols = Http2</c> alone).
/// </summary>
internal sealed class KestrelTestApp : IAsyncDisposable
{
    private KestrelTestApp(WebApplication app, Uri http1, Uri http2)
    {
        App = app;
        Http1 = http1;
        Http2 = http2;
        Pool = app.Services.GetRequiredService<RequestArenaPool>();
    }

    public WebApplication App { get; }

    /// <summary>The HTTP/1.1 endpoint's base address.</summary>
    public Uri Http1 { get; }

    /// <summary>The HTTP/2-only endpoint's base address.</summary>
    public Uri Http2 { get; }

    public RequestArenaPool Pool { get; }

    public static async Task<KestrelTestApp> StartAsync(Action<WebApplication> map, Action<SwitchableAllocatorOptions>? configure = null, Action<WebApplicationBuilder>? build = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http1);
            kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http2);
        });
        builder.Services.AddSwitchableAllocators(options =>
        {
            options.MemoryBudget = 16 * 1024 * 1024;
            options.IdleTrimInterval = TimeSpan.FromHours(1);
            configure?.Invoke(options);
        });
        build?.Invoke(builder);
        WebApplication app = builder.Build();
        map(app);
        await app.StartAsync();
        string[] addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.ToArray();
        return new KestrelTestApp(app, new Uri(addresses[0]), new Uri(addresses[1]));
    }

    /// <summary>A client for the HTTP/2 endpoint that speaks HTTP/2 only (prior knowledge, no upgrade).</summary>
    public HttpClient CreateHttp2Client() => new()
    {
        BaseAddress = Http2,
        DefaultRequestVersion = HttpVersion.Version20,
        DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact,
    };

    public async ValueTask DisposeAsync()
    {
        await App.StopAsync();
        await App.DisposeAsync();
    }
}
