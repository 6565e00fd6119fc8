using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

/// <summary>The WebApi sample through WebApplicationFactory.</summary>
[Collection(MeterListenerCollection.Name)]
public sealed class SampleTests(SampleTests.Factory factory) : IClassFixture<SampleTests.Factory>
{
    public sealed class Factory : WebApplicationFactory<Program>
    {
        protected override void ConfigureWebHost(IWebHostBuilder builder) =>
            builder.ConfigureLogging(logging => logging.ClearProviders());
    }

    private readonly HttpClient _client = factory.CreateClient();

    [Theory]
    [InlineData("/digest")]
    [InlineData("/digest/arraypool")]
    [InlineData("/digest/new")]
    public async Task Digest_endpoints_return_the_SHA_256_of_the_body(string path)
    {
        byte[] body = Enumerable.Range(0, 100_000).Select(i => (byte)(i * 7)).ToArray();

        using var response = await _client.PostAsync(path, new ByteArrayContent(body));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(Convert.ToHexString(SHA256.HashData(body)), await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Digest_refuses_a_body_over_one_MiB()
    {
        using var response = await _client.PostAsync("/digest", new ByteArrayContent(new byte[1024 * 1024 + 1]));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
    }

    [Fact]
    public async Task Transform_writes_the_transformed_json()
    {
        using var response = await _client.PostAsync("/transform", new StringContent("""{"name":"widget","extra":{"a":1},"values":[1,2,3.5]}""", Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using JsonDocument json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("WIDGET", json.RootElement.GetProperty("name").GetString());
        Assert.Equal(3, json.RootElement.GetProperty("count").GetInt32());
        Assert.Equal(6.5, json.RootElement.GetProperty("sum").GetDouble());
        Assert.Equal([2.0, 4.0, 7.0], json.RootElement.GetProperty("values").EnumerateArray().Select(v => v.GetDouble()));
    }

    [Fact]
    public async Task Transform_refuses_malformed_json_with_400()
    {
        using var response = await _client.PostAsync("/transform", new StringContent("""{"name": """));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(300)]
    public async Task Render_returns_N_KiB_of_text(int kb)
    {
        byte[] body = await _client.GetByteArrayAsync($"/render?kb={kb}");

        Assert.Equal(kb * 1024, body.Length);
        if (kb > 0)
        {
            Assert.StartsWith("AllocHosting renders", Encoding.UTF8.GetString(body));
        }
    }

    [Fact]
    public async Task Metrics_show_the_allochosting_series()
    {
        await _client.PostAsync("/digest", new ByteArrayContent(new byte[5000]));
        await _client.GetStringAsync("/render?kb=200");

        string metrics = "";
        await TestApp.EventuallyAsync(
            () =>
            {
                metrics = _client.GetStringAsync("/metrics").GetAwaiter().GetResult();
                return metrics.Contains("allochosting_request_arena_used_bytes_bucket", StringComparison.Ordinal);
            },
            "/metrics shows the histogram");

        Assert.Contains("allochosting_allocated_bytes_total", metrics, StringComparison.Ordinal);
        Assert.Contains("allochosting_live_bytes", metrics, StringComparison.Ordinal);
        Assert.Contains("allochosting_mapped_bytes", metrics, StringComparison.Ordinal);
        Assert.Contains("allochosting_request_arena_active", metrics, StringComparison.Ordinal);
        Assert.Contains("le=\"262144\"", metrics, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Stats_reports_process_figures_and_the_arena_options()
    {
        using JsonDocument json = JsonDocument.Parse(await _client.GetStringAsync("/stats"));

        Assert.Equal("Bump", json.RootElement.GetProperty("arenaKind").GetString());
        Assert.Equal(65536, json.RootElement.GetProperty("arenaChunkSize").GetInt32());
        Assert.True(json.RootElement.GetProperty("workingSetBytes").GetInt64() > 0);
        Assert.True(json.RootElement.TryGetProperty("gen0Collections", out _));
    }

    [Fact]
    public async Task The_allocator_dashboard_is_mapped_in_Development()
    {
        // WebApplicationFactory runs the sample in Development.
        string html = await _client.GetStringAsync("/allocators");

        Assert.Contains("data-source=\"/allocators/data\"", html, StringComparison.Ordinal);
        using JsonDocument data = JsonDocument.Parse(await _client.GetStringAsync("/allocators/data"));
        Assert.True(data.RootElement.TryGetProperty("rents", out _));
    }

    [Fact]
    public async Task The_allocator_dashboard_is_not_mapped_outside_Development()
    {
        await using var production = new Factory().WithWebHostBuilder(builder => builder.UseEnvironment("Production"));
        using HttpClient client = production.CreateClient();

        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/allocators")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/allocators/data")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/stats")).StatusCode);
    }

    [Fact]
    public async Task Health_reports_the_allocators()
    {
        Assert.Equal("Healthy", await _client.GetStringAsync("/health"));
    }
}
