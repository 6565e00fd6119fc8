using System.Diagnostics;
using Microsoft.Playwright;

namespace AllocHosting.Tests;

/// <summary>
/// The allocator dashboard in a real browser: headless Chromium, driven by Playwright, loads
/// /allocators from the sample running on Kestrel, and the charts must show non-zero figures after
/// a bounded load. A renamed instrument, a broken script or a page the content security policy
/// blocks fails here. The screenshot is saved next to the test assembly (and where
/// ALLOCHOSTING_DASHBOARD_SCREENSHOT says, which is how docs/images/allocator-dashboard.png is made).
/// </summary>
public sealed class AllocatorDashboardBrowserTests
{
    private static readonly TimeSpan TestBudget = TimeSpan.FromSeconds(60);

    // The charts that must leave zero under the load (live bytes may be caught at zero between requests).
    private static readonly string[] s_nonZeroCharts = ["chart-used", "chart-rents", "chart-allocated", "chart-pressure", "chart-numa"];

    [ChromiumFact]
    public async Task The_page_charts_non_zero_figures_from_the_running_sample()
    {
        var clock = Stopwatch.StartNew();
        int port = SampleProcess.FreePort();
        using ChildProcess app = SampleProcess.Start(port, environment: "Development");
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        var appUri = new Uri($"http://127.0.0.1:{port}");
        await SampleProcess.WaitUntilAsync(http, new Uri(appUri, "/allocators/data"), app, TimeSpan.FromSeconds(20));

        using IPlaywright playwright = await Playwright.CreateAsync();
        await using IBrowser browser = await playwright.Chromium.LaunchAsync(new()
        {
            ExecutablePath = ChromiumBinary.Path,
            Headless = true,
            Timeout = 30_000,
            // Root in CI containers needs --no-sandbox; the rest keeps Chromium quiet and off the network.
            Args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking", "--no-first-run", "--disable-extensions"],
        });
        IPage page = await browser.NewPageAsync(new() { ViewportSize = new() { Width = 1280, Height = 900 } });
        var problems = new List<string>();
        page.Console += (_, message) =>
        {
            if (message.Type == "error")
            {
                problems.Add($"console {message.Type}: {message.Text}");
            }
        };
        page.PageError += (_, error) => problems.Add("page error: " + error);

        IResponse? response = await page.GotoAsync(new Uri(appUri, "/allocators?interval=250").ToString());
        Assert.NotNull(response);
        Assert.Equal(200, response.Status);
        await page.WaitForFunctionAsync("() => Number(document.body.dataset.samples) >= 2", null, new() { Timeout = 15_000 });

        int requests = await SampleProcess.DriveLoadAsync(http, appUri, TimeSpan.FromSeconds(4), maxRequests: 400);
        Assert.True(requests >= 40, $"Only {requests} requests were sent.");

        string nonZero = $"() => {System.Text.Json.JsonSerializer.Serialize(s_nonZeroCharts)}.every(id => Number(document.getElementById(id).dataset.max) > 0)";
        try
        {
            await page.WaitForFunctionAsync(nonZero, null, new() { Timeout = 15_000 });
        }
        catch (TimeoutException)
        {
            Assert.Fail($"The charts did not all show data after {requests} requests: {await ChartMaximaAsync(page)}\n{string.Join("\n", problems)}\n--- sample output ---\n{app.Output}");
        }

        // What a user reads: the lines are drawn, the legends carry values, the tiles are filled.
        Assert.True(await page.Locator("#chart-rents path[data-series='rents']").CountAsync() == 1, "No rents line.");
        Assert.True(await page.Locator("#chart-used path[data-series='p99']").CountAsync() == 1, "No p99 line.");
        Assert.True(await page.Locator("#chart-numa rect[data-series]").CountAsync() >= 1, "No NUMA bar.");
        Assert.Equal(["request", "thread", "global"], await page.Locator("#chart-live .legend li").EvaluateAllAsync<string[]>("items => items.map(i => i.dataset.series)"));
        Assert.True(long.Parse(await page.InnerTextAsync("#tile-overflowed"), System.Globalization.NumberStyles.AllowThousands, System.Globalization.CultureInfo.InvariantCulture) > 0, "No overflowed request counted.");
        Assert.True(long.Parse(await page.InnerTextAsync("#tile-rejected"), System.Globalization.NumberStyles.AllowThousands, System.Globalization.CultureInfo.InvariantCulture) > 0, "No rejected request counted.");
        Assert.DoesNotContain("error", await page.GetAttributeAsync("#status", "class") ?? "", StringComparison.Ordinal);

        byte[] screenshot = await page.ScreenshotAsync(new() { FullPage = true });
        await File.WriteAllBytesAsync(Path.Combine(AppContext.BaseDirectory, "allocator-dashboard.png"), screenshot);
        string? copy = Environment.GetEnvironmentVariable("ALLOCHOSTING_DASHBOARD_SCREENSHOT");
        if (!string.IsNullOrEmpty(copy))
        {
            await File.WriteAllBytesAsync(copy, screenshot);
        }

        Assert.True(problems.Count == 0, "The page reported problems:\n" + string.Join("\n", problems));
        Assert.True(clock.Elapsed < TestBudget, $"The test took {clock.Elapsed}.");
    }

    private static Task<string> ChartMaximaAsync(IPage page) =>
        page.EvaluateAsync<string>("() => [...document.querySelectorAll('figure.chart')].map(f => f.id + '=' + f.dataset.max).join(', ')");
}
