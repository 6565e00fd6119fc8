using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

/// <summary>
/// The code of README.md's "Beyond requests: scopes", compiled and run on a real Kestrel on 127.0.0.1: a request
/// handing its body off to a BackgroundService through a scope, a periodic job renting per round, and a SignalR hub
/// renting per invocation (the last test checks that every block of the section is here).
/// </summary>
public sealed class ReadmeArenaScopeExampleTests
{
    private static void AddUploads(WebApplicationBuilder builder)
    {
        builder.Services.AddSingleton(Channel.CreateUnbounded<Upload>());
        builder.Services.AddSingleton<UploadLog>();   // the app's own: where the digests go
        builder.Services.AddHostedService<UploadWorker>();
        builder.Services.AddHostedService<ReportWorker>();
    }

    private static void MapUploads(WebApplication app)
    {
        // A request hands work off: what must outlive the request is copied into a scope the work owns.
        app.MapPost("/uploads", async (IRequestBuffers buffers, IArenaScopeFactory scopes, Channel<Upload> uploads) =>
        {
            ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();   // request memory: released when the request ends
            ArenaScope scope = scopes.CreateScope();                      // from here on owned by the worker
            Memory<byte> copy = scope.Rent(body.Length);
            body.CopyTo(copy);
            if (!uploads.Writer.TryWrite(new Upload(scope, copy)))
            {
                scope.Dispose();
                return Results.StatusCode(StatusCodes.Status503ServiceUnavailable);
            }

            return Results.Accepted();
        });
    }

    [Fact]
    public async Task Uploads_handed_off_to_the_worker_are_digested_and_every_scope_is_released()
    {
        await using var server = await ExampleServer.StartAsync();
        using var client = new HttpClient { BaseAddress = server.Address };
        var expected = new List<string>();
        for (int i = 0; i < 10; i++)
        {
            byte[] body = Encoding.UTF8.GetBytes(new string((char)('a' + i), 1000 + (i * 3000)));
            expected.Add(Convert.ToHexString(SHA256.HashData(body)));
            using HttpResponseMessage response = await client.PostAsync("/uploads", new ByteArrayContent(body));
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        }

        UploadLog log = server.Services.GetRequiredService<UploadLog>();
        await TestApp.EventuallyAsync(() => log.Snapshot().Length == expected.Count, "the worker digested every upload");
        Assert.Equal(expected, log.Snapshot());
        ArenaScopeFactory factory = server.Services.GetRequiredService<ArenaScopeFactory>();
        await TestApp.EventuallyAsync(() => factory.LiveCount == 0 && server.Pool.ChunksInUse == 0, "every scope and request released");
    }

    [Fact]
    public async Task The_periodic_job_rents_a_report_per_round_and_releases_it()
    {
        await using var server = await ExampleServer.StartAsync();
        using var client = new HttpClient { BaseAddress = server.Address };
        using (HttpResponseMessage response = await client.PostAsync("/uploads", new ByteArrayContent("x"u8.ToArray())))
        {
            Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        }

        UploadLog log = server.Services.GetRequiredService<UploadLog>();
        await TestApp.EventuallyAsync(() => log.ReportLengths.Contains(65), "a round reported the digest (64 hex digits and a newline)");
        ArenaScopeFactory factory = server.Services.GetRequiredService<ArenaScopeFactory>();
        await TestApp.EventuallyAsync(() => factory.LiveCount == 0 && server.Pool.ChunksInUse == 0, "the round released its scope");
    }

    [Fact]
    public async Task The_hub_digests_through_request_buffers_per_invocation()
    {
        await using var server = await ExampleServer.StartAsync();
        await using HubConnection connection = new HubConnectionBuilder()
            .WithUrl(new Uri(server.Address, "/digest"), Microsoft.AspNetCore.Http.Connections.HttpTransportType.WebSockets)
            .Build();
        await connection.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));

        foreach (string text in new[] { "hello", "wörld", new string('z', 20_000) })
        {
            string digest = await connection.InvokeAsync<string>(nameof(DigestHub.Digest), text).WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text))), digest);
        }

        await TestApp.EventuallyAsync(() => server.Pool.ChunksInUse == 0, "each invocation released its arena, the connection still open");
        Assert.Equal(HubConnectionState.Connected, connection.State);
    }

    [Fact]
    public void Every_code_block_of_the_README_section_is_compiled_here()
    {
        var section = ReadmeSection.Read("## Beyond requests: scopes", nameof(ReadmeArenaScopeExampleTests));
        Assert.Contains("AddSignalR().AddRequestArenas()", section.Text, StringComparison.Ordinal);
        Assert.True(section.CodeBlocks.Length >= 4, $"{section.CodeBlocks.Length} code blocks");
        section.AssertEveryBlockIsIn("ReadmeArenaScopeExampleTests.cs");
    }

    public sealed record Upload(ArenaScope Scope, Memory<byte> Bytes);

    // A BackgroundService: each upload's scope is disposed once its bytes are processed.
    public sealed class UploadWorker(Channel<Upload> uploads, UploadLog log) : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            await foreach (Upload upload in uploads.Reader.ReadAllAsync(stoppingToken))
            {
                await using (upload.Scope)
                {
                    log.Add(Convert.ToHexString(SHA256.HashData(upload.Bytes.Span)));
                }
            }
        }
    }

    // A periodic job: each round gets its own arena, released when the round ends.
    public sealed class ReportWorker(IArenaScopeFactory scopes, UploadLog log) : BackgroundService
    {
        protected override async Task ExecuteAsync(CancellationToken stoppingToken)
        {
            using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await using ArenaScope scope = scopes.CreateScope();
                RequestBufferWriter report = scope.CreateWriter();
                foreach (string digest in log.Snapshot())
                {
                    Encoding.UTF8.GetBytes(digest + "\n", report);
                }

                log.Report(report.WrittenMemory.Length);
            }
        }
    }

    public sealed class DigestHub(IRequestBuffers buffers) : Hub
    {
        public string Digest(string text)
        {
            Memory<byte> utf8 = buffers.Rent(Encoding.UTF8.GetMaxByteCount(text.Length));   // released when Digest returns
            int length = Encoding.UTF8.GetBytes(text, utf8.Span);
            return Convert.ToHexString(SHA256.HashData(utf8.Span[..length]));
        }
    }

    /// <summary>The examples' own store: digests in arrival order and the lengths of the reports (any thread).</summary>
    public sealed class UploadLog
    {
        private readonly Lock _lock = new();
        private readonly List<string> _digests = [];
        private readonly List<int> _reports = [];

        public void Add(string digest)
        {
            lock (_lock)
            {
                _digests.Add(digest);
            }
        }

        public string[] Snapshot()
        {
            lock (_lock)
            {
                return [.. _digests];
            }
        }

        public void Report(int length)
        {
            lock (_lock)
            {
                _reports.Add(length);
            }
        }

        public int[] ReportLengths
        {
            get
            {
                lock (_lock)
                {
                    return [.. _reports];
                }
            }
        }
    }

    private sealed class ExampleServer : IAsyncDisposable
    {
        private readonly WebApplication _app;

        private ExampleServer(WebApplication app, Uri address)
        {
            _app = app;
            Address = address;
        }

        public Uri Address { get; }

        public IServiceProvider Services => _app.Services;

        public RequestArenaPool Pool => _app.Services.GetRequiredService<RequestArenaPool>();

        public static async Task<ExampleServer> StartAsync()
        {
            var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
            builder.Logging.ClearProviders();
            builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http1));
            builder.Services.AddSwitchableAllocators(options =>
            {
                options.MemoryBudget = 16 * 1024 * 1024;
                options.IdleTrimInterval = TimeSpan.FromHours(1);
            });
            builder.Services.AddSignalR().AddRequestArenas();
            AddUploads(builder);
            WebApplication app = builder.Build();
            MapUploads(app);
            app.MapHub<DigestHub>("/digest");
            await app.StartAsync();
            string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
            return new ExampleServer(app, new Uri(address));
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
