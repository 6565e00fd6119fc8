using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace AllocHosting.Tests;

/// <summary>The sample's appsettings.json: requests are not logged one by one in Production (a soak wrote 53 MB of logs).</summary>
[Collection(MeterListenerCollection.Name)]
public sealed class SampleLoggingTests
{
    [Fact]
    public async Task In_Production_a_request_writes_no_ASP_NET_Core_log_below_Warning()
    {
        var collector = new FakeLogCollector();
        await using var factory = new WebApplicationFactory<Program>().WithWebHostBuilder(builder =>
        {
            builder.UseEnvironment("Production");
            builder.ConfigureLogging(logging => logging.ClearProviders());
            builder.ConfigureServices(services => services.AddSingleton<ILoggerProvider>(new FakeLoggerProvider(collector)));
        });
        using HttpClient client = factory.CreateClient();

        for (int i = 0; i < 5; i++)
        {
            (await client.GetAsync("/noop")).EnsureSuccessStatusCode();
        }

        var noisy = collector.GetSnapshot()
            .Where(record => record.Category?.StartsWith("Microsoft.AspNetCore", StringComparison.Ordinal) == true && record.Level < LogLevel.Warning)
            .Select(record => $"{record.Category}: {record.Message}")
            .ToList();
        Assert.Empty(noisy);
    }
}
