using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

/// <summary>The sample's aggregator endpoints: the four variants answer the same bytes, in process and on the real sample.</summary>
[Collection(MeterListenerCollection.Name)]
public sealed class AggregatorSampleTests(AggregatorSampleTests.Factory factory) : IClassFixture<AggregatorSampleTests.Factory>
{
    private static readonly string[] Variants = ["/aggregate", "/aggregate/memorystream", "/aggregate/arraypool", "/aggregate/recyclable"];

    /// <summary>The sample on the test server; its upstream client calls the same test server.</summary>
    public sealed class Factory : WebApplicationFactory<Program>
    {
        protected override void ConfigureWebHost(IWebHostBuilder builder)
        {
            builder.ConfigureLogging(logging => logging.ClearProviders());
            builder.ConfigureTestServices(services => services.AddHttpClient(AggregatorEndpoints.UpstreamClient, client => client.BaseAddress = Server.BaseAddress)
                .ConfigurePrimaryHttpMessageHandler(() => Server.CreateHandler()));
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(2_000)]   // about 130 KB of upstream JSON: several segments of request memory, arrays that grow
    public async Task The_four_variants_answer_the_same_bytes(int items)
    {
        HttpClient client = factory.CreateClient();
        var answers = new List<byte[]>();
        foreach (string variant in Variants)
        {
            using HttpResponseMessage response = await client.GetAsync($"{variant}?items={items}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
            answers.Add(await response.Content.ReadAsByteArrayAsync());
        }

        Assert.All(answers, answer => Assert.Equal(answers[0], answer));
        using JsonDocument summary = JsonDocument.Parse(answers[0]);
        Assert.Equal(items, summary.RootElement.GetProperty("count").GetInt32());
        Assert.Equal(Math.Min(items, 3), summary.RootElement.GetProperty("dearest").GetArrayLength());
    }

    [Fact]
    public async Task On_the_real_sample_the_upstream_is_the_server_itself_on_127_0_0_1()
    {
        int port = SampleProcess.FreePort();
        using ChildProcess app = SampleProcess.Start(port);
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
        await SampleProcess.WaitUntilAsync(http, new Uri(http.BaseAddress, "/health"), app, TimeSpan.FromSeconds(60));

        var answers = new List<string>();
        foreach (string variant in Variants)
        {
            answers.Add(await http.GetStringAsync($"{variant}?items=50"));
        }

        Assert.All(answers, answer => Assert.Equal(answers[0], answer));
        Assert.Contains("\"count\":50", answers[0], StringComparison.Ordinal);
    }
}
