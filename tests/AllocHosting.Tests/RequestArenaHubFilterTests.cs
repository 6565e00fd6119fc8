using System.Collections.Concurrent;
using AllocHosting.Allocators;
using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.SignalR;
using Microsoft.AspNetCore.SignalR.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

/// <summary>
/// <c>AddSignalR().AddRequestArenas()</c> on a real Kestrel on 127.0.0.1, with the SignalR client over WebSockets:
/// each hub invocation rents from its own arena, through <see cref="IRequestBuffers"/> injected into the hub's
/// constructor or the hub method, released when the method returns, never from the connection's request.
/// </summary>
public sealed class RequestArenaHubFilterTests
{
    [Fact]
    public async Task Two_concurrent_invocations_of_one_connection_rent_from_separate_arenas_released_when_they_return()
    {
        await using var server = await HubServer.StartAsync(withArenas: true);
        await using HubConnection connection = await server.ConnectAsync();

        Task<string> first = connection.InvokeAsync<string>(nameof(ArenaProbeHub.FillAndHold), 3000, (byte)1);
        Task<string> second = connection.InvokeAsync<string>(nameof(ArenaProbeHub.FillAndHold), 3000, (byte)2);
        string[] results = await Task.WhenAll(first, second).WaitAsync(TimeSpan.FromSeconds(10));

        // Each saw fresh zero memory, kept its own bytes while the other wrote, and holds its rent alone.
        Assert.All(results, result => Assert.Equal("zero:intact:3000", result));
        await TestApp.EventuallyAsync(() => server.Pool.ChunksInUse == 0, "both invocations released their arenas");
        Assert.Equal(0, server.Pool.LiveBytes);
        Assert.Equal(2, server.Probe.Kept.Count);
        Assert.All(server.Probe.Kept, memory => Assert.Throws<ObjectDisposedException>(() => memory.Span[0]));
        Assert.Equal(HubConnectionState.Connected, connection.State);   // released while the connection lives on
    }

    [Fact]
    public async Task A_hub_method_parameter_rents_from_the_invocation_arena_too()
    {
        await using var server = await HubServer.StartAsync(withArenas: true);
        await using HubConnection connection = await server.ConnectAsync();

        for (int i = 0; i < 3; i++)
        {
            long used = await connection.InvokeAsync<long>(nameof(ArenaProbeHub.RentInMethod), 500);
            Assert.Equal(500, used);   // its own arena each time: nothing of the previous invocation
            await TestApp.EventuallyAsync(() => server.Pool.ChunksInUse == 0, "the invocation released its arena");
        }

        Assert.True(server.Probe.ConnectedRented, "OnConnectedAsync rented through the constructor's IRequestBuffers");
        Assert.Equal(0, server.Services.GetRequiredService<ArenaScopeFactory>().LiveCount);
    }

    [Fact]
    public async Task Renting_after_the_invocation_returned_is_refused()
    {
        await using var server = await HubServer.StartAsync(withArenas: true);
        await using HubConnection connection = await server.ConnectAsync();

        await connection.InvokeAsync(nameof(ArenaProbeHub.KeepBuffers));
        IRequestBuffers kept = Assert.IsAssignableFrom<IRequestBuffers>(server.Probe.KeptBuffers);
        await TestApp.EventuallyAsync(() => server.Pool.ChunksInUse == 0, "the invocation released its arena");

        Assert.Throws<InvalidOperationException>(() => kept.Rent(10));
        Assert.Equal(0, server.Pool.ChunksInUse);
    }

    [Fact]
    public async Task Without_the_filter_a_hub_rents_from_the_connection_request_which_keeps_it_until_the_connection_ends()
    {
        // The reason for AddRequestArenas(): the control case, on today's behaviour of IRequestBuffers.
        await using var server = await HubServer.StartAsync(withArenas: false);
        await using HubConnection connection = await server.ConnectAsync();

        long first = await connection.InvokeAsync<long>(nameof(ArenaProbeHub.RentInMethod), 500);
        long second = await connection.InvokeAsync<long>(nameof(ArenaProbeHub.RentInMethod), 500);

        Assert.True(second > first, $"the connection's arena grows across invocations ({first}, then {second})");
        Assert.True(server.Pool.ChunksInUse > 0);
        await connection.StopAsync();
        await TestApp.EventuallyAsync(() => server.Pool.ChunksInUse == 0, "the connection's request ended");
    }

    [Fact]
    public async Task With_InstallContextAllocator_the_invocation_arena_serves_the_switchable_allocator_too()
    {
        await using var server = await HubServer.StartAsync(withArenas: true, options => options.InstallContextAllocator = true);
        await using HubConnection connection = await server.ConnectAsync();

        for (int i = 0; i < 2; i++)
        {
            long used = await connection.InvokeAsync<long>(nameof(ArenaProbeHub.AllocateThroughSwitchable));
            Assert.InRange(used, 1000, 1100);   // this invocation's arena only, not the connection's nor the previous one's
            await TestApp.EventuallyAsync(() => server.Pool.ChunksInUse == 0, "the invocation released its arena");
        }
    }

    [Fact]
    public void AddRequestArenas_adds_the_allocators_only_if_missing_and_the_filter_once()
    {
        var alone = new ServiceCollection();
        alone.AddSignalR().AddRequestArenas();
        Assert.Contains(alone, d => d.ServiceType == typeof(RequestArenaPool));
        Assert.Contains(alone, d => d.ServiceType == typeof(IArenaScopeFactory));

        var services = new ServiceCollection();
        services.AddSwitchableAllocators(options => options.MemoryBudget = 8 * 1024 * 1024);
        int registrations = services.Count;
        ISignalRServerBuilder signalR = services.AddSignalR();
        int withSignalR = services.Count;
        signalR.AddRequestArenas().AddRequestArenas();

        // The filter and its options callback only: the configuration is not bound again after the app's callback.
        Assert.Equal(withSignalR + 2, services.Count);
        Assert.Single(services, d => d.ServiceType == typeof(RequestArenaHubFilter));
        Assert.True(withSignalR > registrations);
    }

    /// <summary>What the hub saw, kept across its per-invocation instances.</summary>
    public sealed class HubProbe
    {
        private readonly TaskCompletionSource _bothArrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _arrived;

        public ConcurrentBag<Memory<byte>> Kept { get; } = [];

        private volatile bool _connectedRented;

        public bool ConnectedRented
        {
            get => _connectedRented;
            set => _connectedRented = value;
        }

        public object? KeptBuffers { get; set; }

        /// <summary>Completes once two invocations arrived (bounded).</summary>
        public Task ArriveAsync()
        {
            if (Interlocked.Increment(ref _arrived) == 2)
            {
                _bothArrived.TrySetResult();
            }

            return _bothArrived.Task.WaitAsync(TimeSpan.FromSeconds(5));
        }
    }

    public sealed class ArenaProbeHub(IRequestBuffers constructorBuffers, HubProbe probe) : Hub
    {
        public override async Task OnConnectedAsync()
        {
            constructorBuffers.Rent(100).Span.Fill(5);
            probe.ConnectedRented = true;
            await base.OnConnectedAsync();
        }

        /// <summary>Rents through the constructor's buffers, fills, and checks its bytes once another invocation has done the same.</summary>
        public async Task<string> FillAndHold(int bytes, byte fill)
        {
            Memory<byte> memory = constructorBuffers.Rent(bytes);
            bool zero = memory.Span.IndexOfAnyExcept((byte)0) < 0;
            memory.Span.Fill(fill);
            probe.Kept.Add(memory);
            await probe.ArriveAsync();
            bool intact = memory.Span.IndexOfAnyExcept(fill) < 0;
            return $"{(zero ? "zero" : "dirty")}:{(intact ? "intact" : "overwritten")}:{constructorBuffers.Used}";
        }

        public long RentInMethod(int bytes, IRequestBuffers buffers)
        {
            buffers.Rent(bytes).Span.Fill(9);
            return buffers.Used;
        }

        public long AllocateThroughSwitchable(SwitchableAllocator switchable, IRequestBuffers buffers)
        {
            if (switchable.ContextSource is not RequestArenaContextSource)
            {
                return -1;
            }

            // Code that speaks Memory<byte> through the switchable allocator (no unsafe code).
            using var pool = new AllocatorMemoryPool(switchable);
            using System.Buffers.IMemoryOwner<byte> owner = pool.Rent(1000);
            owner.Memory.Span.Fill(9);
            return buffers.Used;
        }

        public void KeepBuffers()
        {
            constructorBuffers.Rent(10);
            probe.KeptBuffers = constructorBuffers;
        }
    }

    private sealed class HubServer : IAsyncDisposable
    {
        private readonly WebApplication _app;

        private HubServer(WebApplication app, Uri address)
        {
            _app = app;
            Address = address;
        }

        public Uri Address { get; }

        public IServiceProvider Services => _app.Services;

        public RequestArenaPool Pool => _app.Services.GetRequiredService<RequestArenaPool>();

        public HubProbe Probe => _app.Services.GetRequiredService<HubProbe>();

        public static async Task<HubServer> StartAsync(bool withArenas, Action<SwitchableAllocatorOptions>? configure = null)
        {
            var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
            builder.Logging.ClearProviders();
            builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen => listen.Protocols = HttpProtocols.Http1));
            builder.Services.AddSwitchableAllocators(options =>
            {
                options.MemoryBudget = 16 * 1024 * 1024;
                options.IdleTrimInterval = TimeSpan.FromHours(1);
                configure?.Invoke(options);
            });
            ISignalRServerBuilder signalR = builder.Services.AddSignalR(options => options.MaximumParallelInvocationsPerClient = 2);
            if (withArenas)
            {
                signalR.AddRequestArenas();
            }

            builder.Services.AddSingleton<HubProbe>();
            WebApplication app = builder.Build();
            app.MapHub<ArenaProbeHub>("/hubs/probe");
            await app.StartAsync();
            string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
            return new HubServer(app, new Uri(address));
        }

        public async Task<HubConnection> ConnectAsync()
        {
            HubConnection connection = new HubConnectionBuilder()
                .WithUrl(new Uri(Address, "/hubs/probe"), Microsoft.AspNetCore.Http.Connections.HttpTransportType.WebSockets)
                .Build();
            await connection.StartAsync().WaitAsync(TimeSpan.FromSeconds(10));
            return connection;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
