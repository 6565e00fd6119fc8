using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AllocHosting.Tests;

public class SwitchableAllocatorsServiceCollectionExtensionsTests
{
    [Fact]
    public async Task The_one_line_works_with_no_other_configuration()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        builder.Services.AddSwitchableAllocators();
        await using WebApplication app = builder.Build();
        app.MapGet("/", (IRequestBuffers buffers) => buffers.Rent(64 * 1024).Length);
        await app.StartAsync();

        Assert.Equal("65536", await app.GetTestClient().GetStringAsync("/"));
        SwitchableAllocatorOptions options = app.Services.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value;
        Assert.Equal(RequestArenaKind.Bump, options.ArenaKind);
        Assert.Equal(64 * 1024, options.InitialArenaSize);
        Assert.Equal(ArenaClearPolicy.ClearUsed, options.ClearPolicy);
    }

    [Fact]
    public async Task Options_bind_from_the_SwitchableAllocators_section_then_the_delegate_runs()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["SwitchableAllocators:ArenaKind"] = "BitSet",
            ["SwitchableAllocators:InitialArenaSize"] = "16384",
            ["SwitchableAllocators:BudgetPolicy"] = "Reject",
        });
        builder.Services.AddSwitchableAllocators(options => options.MemoryBudget = 1024 * 1024);
        await using WebApplication app = builder.Build();
        await app.StartAsync();

        SwitchableAllocatorOptions options = app.Services.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value;
        Assert.Equal(RequestArenaKind.BitSet, options.ArenaKind);
        Assert.Equal(16384, options.InitialArenaSize);
        Assert.Equal(ArenaBudgetPolicy.Reject, options.BudgetPolicy);
        Assert.Equal(1024 * 1024, options.MemoryBudget);
        Assert.Equal(64, app.Services.GetRequiredService<RequestArenaPool>().MaxChunks);
    }

    [Theory]
    [InlineData("InitialArenaSize", "1000", "SwitchableAllocators:InitialArenaSize is 1000; allowed: a multiple of 4096")]
    [InlineData("BitSetBlockSize", "24", "SwitchableAllocators:BitSetBlockSize is 24; allowed: a power of two from 8 to 4096")]
    [InlineData("MemoryBudget", "4096", "SwitchableAllocators:MemoryBudget is 4096; allowed: from InitialArenaSize")]
    [InlineData("MaxArenaSizePerRequest", "1", "SwitchableAllocators:MaxArenaSizePerRequest is 1; allowed: from InitialArenaSize")]
    [InlineData("BudgetWaitTimeout", "00:01:00", "SwitchableAllocators:BudgetWaitTimeout is 00:01:00; allowed: from 00:00:00 to 00:00:10")]
    [InlineData("RetryAfter", "00:00:00.5", "SwitchableAllocators:RetryAfter is 00:00:00.5000000; allowed: whole seconds")]
    [InlineData("IdleTrimInterval", "00:00:00", "SwitchableAllocators:IdleTrimInterval is 00:00:00; allowed: from 00:00:01")]
    [InlineData("ReuseDelay", "00:00:11", "SwitchableAllocators:ReuseDelay is 00:00:11; allowed: from 0 to 00:00:10")]
    [InlineData("ReuseDelay", "-00:00:01", "SwitchableAllocators:ReuseDelay is -00:00:01; allowed: from 0 to 00:00:10")]
    [InlineData("HealthDegradedRatio", "1.5", "SwitchableAllocators:HealthDegradedRatio is 1.5; allowed: above 0 and at most 1")]
    public async Task An_invalid_setting_stops_start_up_with_a_message_naming_it_and_its_range(string setting, string value, string expected)
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["SwitchableAllocators:" + setting] = value });
        builder.Services.AddSwitchableAllocators();
        await using WebApplication app = builder.Build();

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => app.StartAsync());

        Assert.Contains(expected, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("MemoryBudjet")]
    [InlineData("InitialArenaSise")]
    public async Task A_key_the_options_do_not_have_stops_start_up_naming_it(string key)
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["SwitchableAllocators:MemoryBudget"] = "1048576",
            ["SwitchableAllocators:" + key] = "1",
        });
        builder.Services.AddSwitchableAllocators();
        await using WebApplication app = builder.Build();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => app.StartAsync());

        Assert.Contains(key, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Calling_it_twice_registers_the_services_once()
    {
        var services = new ServiceCollection();
        services.AddSingleton<IConfiguration>(new ConfigurationBuilder().Build());
        services.AddLogging();
        services.AddSwitchableAllocators();
        services.AddSwitchableAllocators(options => options.ArenaKind = RequestArenaKind.BitSet);

        Assert.Single(services, d => d.ServiceType == typeof(RequestArenaPool));
        Assert.Single(services, d => d.ServiceType == typeof(IStartupFilter));
        Assert.Single(services, d => d.ServiceType == typeof(IRequestBuffers) && d.Lifetime == ServiceLifetime.Scoped);
        using ServiceProvider provider = services.BuildServiceProvider();
        Assert.Equal(RequestArenaKind.BitSet, provider.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value.ArenaKind);
        Assert.Single(provider.GetRequiredService<IOptions<HealthCheckServiceOptions>>().Value.Registrations, r => r.Name == "allochosting");
    }
}
