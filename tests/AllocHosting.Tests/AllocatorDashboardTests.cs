using System.Diagnostics.Metrics;
using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>MapAllocatorDashboard: the page, its assets and its JSON, on the in-memory test server (the browser test is AllocatorDashboardBrowserTests).</summary>
[Collection(MeterListenerCollection.Name)]
public class AllocatorDashboardTests
{
    private static Task<TestApp> StartAsync(
        Action<WebApplication>? map = null,
        Action<SwitchableAllocatorOptions>? configure = null) =>
        TestApp.StartAsync(
            app =>
            {
                TestApp.MapRent(app);
                (map ?? (a => a.MapAllocatorDashboard())).Invoke(app);
            },
            configure);

    private static async Task<JsonElement> DataAsync(TestApp app, string path = "/allocators/data")
    {
        using HttpResponseMessage response = await app.Client.GetAsync(path);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using JsonDocument json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return json.RootElement.Clone();
    }

    [Fact]
    public async Task The_page_is_self_contained_html_that_points_at_its_own_script_style_and_data()
    {
        await using var app = await StartAsync();

        using HttpResponseMessage response = await app.Client.GetAsync("/allocators");
        string html = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/html", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("data-source=\"/allocators/data\"", html, StringComparison.Ordinal);
        Assert.Contains("src=\"/allocators/dashboard.js\"", html, StringComparison.Ordinal);
        Assert.Contains("href=\"/allocators/dashboard.css\"", html, StringComparison.Ordinal);
        Assert.DoesNotContain("%BASE%", html, StringComparison.Ordinal);
        // Nothing from elsewhere, nothing inline: the policy allows only the page's own endpoints.
        Assert.DoesNotContain("http://", html, StringComparison.OrdinalIgnoreCase);
        Assert.DoesNotContain("https://", html, StringComparison.OrdinalIgnoreCase);
        string policy = response.Headers.GetValues("Content-Security-Policy").Single();
        Assert.Contains("default-src 'none'", policy, StringComparison.Ordinal);
        Assert.Contains("script-src 'self'", policy, StringComparison.Ordinal);
        Assert.DoesNotContain("unsafe-inline", policy, StringComparison.Ordinal);
        Assert.Equal("no-store", response.Headers.CacheControl?.ToString());
        foreach (string chart in new[] { "chart-used", "chart-live", "chart-rents", "chart-pressure", "chart-numa" })
        {
            Assert.Contains($"id=\"{chart}\"", html, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData("/allocators/dashboard.js", "text/javascript", "fetch(")]
    [InlineData("/allocators/dashboard.css", "text/css", ".chart")]
    public async Task The_script_and_style_sheet_are_served_from_the_assembly(string path, string mediaType, string content)
    {
        await using var app = await StartAsync();

        using HttpResponseMessage response = await app.Client.GetAsync(path);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(mediaType, response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("nosniff", response.Headers.GetValues("X-Content-Type-Options").Single());
        Assert.Contains(content, await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_custom_pattern_and_a_path_base_are_followed_by_the_page_links()
    {
        await using var app = await StartAsync(map: a =>
        {
            a.UsePathBase("/ops");
            a.UseRouting();
            a.MapAllocatorDashboard("/diagnostics/memory");
        });

        string html = await app.Client.GetStringAsync("/ops/diagnostics/memory/");
        Assert.Contains("data-source=\"/ops/diagnostics/memory/data\"", html, StringComparison.Ordinal);
        Assert.Contains("src=\"/ops/diagnostics/memory/dashboard.js\"", html, StringComparison.Ordinal);
        await DataAsync(app, "/ops/diagnostics/memory/data");
        Assert.Equal(HttpStatusCode.NotFound, (await app.Client.GetAsync("/allocators")).StatusCode);
    }

    [Fact]
    public async Task Data_reports_rents_usage_allocated_bytes_mapped_memory_and_the_options()
    {
        await using var app = await StartAsync(configure: o => o.InitialArenaSize = 64 * 1024);

        await app.Client.GetStringAsync("/rent?bytes=1000&times=3");
        await app.Client.GetStringAsync("/rent?bytes=5000");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the requests released");
        JsonElement data = await DataAsync(app);

        Assert.Equal(4, data.GetProperty("rents").GetInt64());
        Assert.Equal(0, data.GetProperty("active").GetInt64());
        JsonElement used = data.GetProperty("used");
        Assert.Equal(2, used.GetProperty("count").GetInt64());
        Assert.InRange(used.GetProperty("sum").GetInt64(), 8000, 8200);
        long[] boundaries = used.GetProperty("boundaries").EnumerateArray().Select(b => b.GetInt64()).ToArray();
        long[] buckets = used.GetProperty("buckets").EnumerateArray().Select(b => b.GetInt64()).ToArray();
        Assert.Equal(AllocHostingMetrics.UsedBoundaries, boundaries);
        Assert.Equal(boundaries.Length + 1, buckets.Length);
        // 3000 B and 5000 B: both in the (1 KiB, 4 KiB] and (4 KiB, 16 KiB] buckets.
        Assert.Equal(1, buckets[Array.IndexOf(boundaries, 4096L)]);
        Assert.Equal(1, buckets[Array.IndexOf(boundaries, 16384L)]);
        Assert.Equal(2, buckets.Sum());
        Assert.InRange(data.GetProperty("allocated").GetProperty("request").GetInt64(), 8000, 8200);
        Assert.Equal(0, data.GetProperty("live").GetProperty("request").GetInt64());
        Assert.True(data.GetProperty("live").TryGetProperty("thread", out _));
        Assert.True(data.GetProperty("live").TryGetProperty("global", out _));
        JsonElement numa = data.GetProperty("numa");
        Assert.True(numa.GetProperty("nodes").GetInt32() >= 1);
        Assert.True(numa.GetProperty("mapped").EnumerateArray().Sum(m => m.GetProperty("bytes").GetInt64()) >= 64 * 1024);
        JsonElement arena = data.GetProperty("arena");
        Assert.Equal("bump", arena.GetProperty("kind").GetString());
        Assert.Equal(64 * 1024, arena.GetProperty("chunkSize").GetInt64());
        Assert.True(data.GetProperty("gc").GetProperty("gen0").GetInt64() >= 0);
        Assert.InRange(data.GetProperty("timestamp").GetInt64(), DateTimeOffset.UtcNow.AddMinutes(-1).ToUnixTimeMilliseconds(), DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
    }

    [Fact]
    public async Task Data_shows_live_bytes_and_an_active_arena_while_a_request_holds_memory()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await StartAsync(map: a =>
        {
            a.MapAllocatorDashboard();
            a.MapGet("/hold", async (IRequestBuffers buffers) =>
            {
                buffers.Rent(10_000).Span.Fill(1);
                holding.SetResult();
                await release.Task;
                return "ok";
            });
        });

        Task<string> held = app.Client.GetStringAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        JsonElement during = await DataAsync(app);
        release.SetResult();
        await held;
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        JsonElement after = await DataAsync(app);

        Assert.Equal(1, during.GetProperty("active").GetInt64());
        Assert.InRange(during.GetProperty("live").GetProperty("request").GetInt64(), 10_000, 10_100);
        Assert.Equal(0, after.GetProperty("active").GetInt64());
        Assert.Equal(0, after.GetProperty("live").GetProperty("request").GetInt64());
    }

    [Fact]
    public async Task Data_counts_overflowed_and_rejected_requests_and_failures_by_type()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await StartAsync(
            map: a =>
            {
                a.MapAllocatorDashboard();
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    // Two 64 KiB chunks: the whole budget, and an overflow.
                    buffers.Rent(40_000);
                    buffers.Rent(40_000);
                    holding.SetResult();
                    await release.Task;
                    return "ok";
                });
            },
            configure: o =>
            {
                o.InitialArenaSize = 64 * 1024;
                o.MemoryBudget = 128 * 1024;
                o.MaxArenaSizePerRequest = 128 * 1024;
                o.BudgetPolicy = ArenaBudgetPolicy.Reject;
            });

        Task<string> held = app.Client.GetStringAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        using (HttpResponseMessage refused = await app.Client.GetAsync("/rent?bytes=10"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        }

        release.SetResult();
        await held;
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the requests released");
        JsonElement data = await DataAsync(app);

        Assert.Equal(1, data.GetProperty("overflowed").GetInt64());
        Assert.Equal(1, data.GetProperty("rejected").GetInt64());
        Assert.Equal(1, data.GetProperty("failures").GetProperty("budget_exhausted").GetInt64());
    }

    [Fact]
    public async Task Each_app_sees_its_own_meter_when_two_run_in_one_process()
    {
        await using var first = await StartAsync();
        await using var second = await StartAsync();

        await first.Client.GetStringAsync("/rent?bytes=10&times=3");
        await TestApp.EventuallyAsync(() => first.Pool.ChunksInUse == 0, "the request released");

        Assert.Equal(3, (await DataAsync(first)).GetProperty("rents").GetInt64());
        Assert.Equal(0, (await DataAsync(second)).GetProperty("rents").GetInt64());
        Assert.Equal(0, (await DataAsync(second)).GetProperty("used").GetProperty("count").GetInt64());
    }

    [Fact]
    public async Task Nothing_is_served_and_no_listener_runs_unless_the_page_is_mapped()
    {
        await using var app = await StartAsync(map: _ => { });

        Assert.Equal(HttpStatusCode.NotFound, (await app.Client.GetAsync("/allocators")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await app.Client.GetAsync("/allocators/data")).StatusCode);
        Assert.DoesNotContain(true, InstrumentsEnabled(app));
    }

    [Fact]
    public async Task The_listener_runs_once_the_page_is_mapped()
    {
        // The control of the test above: the same probe sees the page's listener.
        await using var app = await StartAsync();
        await DataAsync(app);

        Assert.Contains(true, InstrumentsEnabled(app));
    }

    // Whether anything listens to each instrument of this app's AllocHosting meter. The probe's own
    // listener enables nothing, so Instrument.Enabled reports the other listeners alone.
    private static List<bool> InstrumentsEnabled(TestApp app)
    {
        var metrics = app.Services.GetRequiredService<IMeterFactory>();
        var enabled = new List<bool>();
        using var probe = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (instrument.Meter.Name == AllocHostingMetrics.MeterName && ReferenceEquals(instrument.Meter.Scope, metrics))
                {
                    enabled.Add(instrument.Enabled);
                }
            },
        };
        probe.Start();
        Assert.NotEmpty(enabled);
        return enabled;
    }

    [Fact]
    public async Task Conventions_on_the_returned_builder_apply_to_every_endpoint_of_the_page()
    {
        await using var app = await StartAsync(map: a => a.MapAllocatorDashboard().RequireHost("ops.example"));

        foreach (string path in new[] { "/allocators", "/allocators/data", "/allocators/dashboard.js", "/allocators/dashboard.css" })
        {
            Assert.Equal(HttpStatusCode.NotFound, (await app.Client.GetAsync(path)).StatusCode);
            using var request = new HttpRequestMessage(HttpMethod.Get, path);
            request.Headers.Host = "ops.example";
            using HttpResponseMessage response = await app.Client.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }

    [Fact]
    public async Task Mapping_needs_AddSwitchableAllocators_and_a_pattern()
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseTestServer();
        await using WebApplication bare = builder.Build();
        var error = Assert.Throws<InvalidOperationException>(() => bare.MapAllocatorDashboard());
        Assert.Contains("AddSwitchableAllocators", error.Message, StringComparison.Ordinal);

        await using var app = await StartAsync(map: _ => { });
        Assert.Throws<ArgumentNullException>(() => ((WebApplication)null!).MapAllocatorDashboard());
        Assert.Throws<ArgumentNullException>(() => app.App.MapAllocatorDashboard(null!));
        Assert.Throws<ArgumentException>(() => app.App.MapAllocatorDashboard(" "));
    }
}
