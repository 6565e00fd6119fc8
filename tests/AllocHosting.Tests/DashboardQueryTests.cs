using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace AllocHosting.Tests;

/// <summary>
/// dashboards/allochosting.json against real servers: the sample on Kestrel, scraped by a real
/// Prometheus, and every PromQL expression of the dashboard evaluated through Prometheus's HTTP
/// API. A renamed metric or label fails here instead of leaving an empty panel.
/// </summary>
public sealed partial class DashboardQueryTests
{
    private const string Job = "allochosting-test";

    // What the test substitutes for Grafana's $__rate_interval: wide enough for the 1 s scrapes of the short run.
    private const string RateInterval = "30s";

    private static readonly TimeSpan TestBudget = TimeSpan.FromSeconds(55);

    [Fact]
    public void Dashboard_is_an_importable_Grafana_dashboard_with_units_and_legends()
    {
        using JsonDocument dashboard = LoadDashboard();
        JsonElement root = dashboard.RootElement;

        JsonElement input = Assert.Single(root.GetProperty("__inputs").EnumerateArray());
        Assert.Equal("DS_PROMETHEUS", input.GetProperty("name").GetString());
        Assert.Equal("datasource", input.GetProperty("type").GetString());
        Assert.Equal("prometheus", input.GetProperty("pluginId").GetString());
        Assert.True(root.GetProperty("schemaVersion").GetInt32() >= 36, "Grafana 10 reads schema 36 and later.");
        Assert.Equal(["job", "instance"], root.GetProperty("templating").GetProperty("list").EnumerateArray().Select(v => v.GetProperty("name").GetString()));

        var panels = root.GetProperty("panels").EnumerateArray().Where(p => p.GetProperty("type").GetString() != "row").ToList();
        Assert.True(panels.Count >= 10, $"The issue lists at least ten panels; found {panels.Count}.");
        foreach (JsonElement panel in panels)
        {
            string title = panel.GetProperty("title").GetString()!;
            Assert.Equal("${DS_PROMETHEUS}", panel.GetProperty("datasource").GetProperty("uid").GetString());
            Assert.False(string.IsNullOrWhiteSpace(panel.GetProperty("description").GetString()), $"{title}: no description.");
            Assert.False(string.IsNullOrWhiteSpace(panel.GetProperty("fieldConfig").GetProperty("defaults").GetProperty("unit").GetString()), $"{title}: no unit.");
            Assert.True(panel.GetProperty("options").GetProperty("legend").GetProperty("showLegend").GetBoolean(), $"{title}: legend hidden.");
            foreach (JsonElement target in panel.GetProperty("targets").EnumerateArray())
            {
                Assert.False(string.IsNullOrWhiteSpace(target.GetProperty("expr").GetString()), $"{title}: a target without expr.");
                Assert.False(string.IsNullOrWhiteSpace(target.GetProperty("legendFormat").GetString()), $"{title}: a target without legend.");
                Assert.Equal("${DS_PROMETHEUS}", target.GetProperty("datasource").GetProperty("uid").GetString());
            }
        }

        // Every panel the issue asks for, by the series it must read.
        string all = string.Join("\n", Expressions(root).Select(e => e.Expr));
        foreach (string series in new[]
        {
            "allochosting_request_arena_used_bytes_bucket", "allochosting_request_arena_overflowed_total", "allochosting_rejected_total", "allochosting_request_arena_rents_total",
            "allochosting_live_bytes", "allochosting_allocated_bytes_total", "allochosting_mapped_bytes", "allochosting_failures_total",
            "http_server_request_duration_seconds_count", "http_server_request_duration_seconds_bucket", "dotnet_gc_collections_total",
        })
        {
            Assert.Contains(series, all);
        }
    }

    [PrometheusFact]
    public async Task Every_dashboard_query_returns_data_from_a_real_Prometheus_scraping_the_sample()
    {
        var clock = Stopwatch.StartNew();
        using JsonDocument dashboard = LoadDashboard();
        var expressions = Expressions(dashboard.RootElement).ToList();
        var variableQueries = VariableQueries(dashboard.RootElement).ToList();
        Assert.NotEmpty(expressions);

        string work = Directory.CreateTempSubdirectory("allochosting-prometheus-").FullName;
        try
        {
            int appPort = SampleProcess.FreePort();
            using ChildProcess app = SampleProcess.Start(appPort);
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
            var appUri = new Uri($"http://127.0.0.1:{appPort}");
            await SampleProcess.WaitUntilAsync(http, new Uri(appUri, "/"), app, TimeSpan.FromSeconds(20));

            int prometheusPort = SampleProcess.FreePort();
            string config = Path.Combine(work, "prometheus.yml");
            await File.WriteAllTextAsync(config, $"""
                global:
                  scrape_interval: 1s
                  evaluation_interval: 1s
                scrape_configs:
                  - job_name: {Job}
                    static_configs:
                      - targets: ["127.0.0.1:{appPort}"]
                """);
            using ChildProcess prometheus = ChildProcess.Start(PrometheusBinary.Path!,
            [
                $"--config.file={config}",
                $"--storage.tsdb.path={Path.Combine(work, "data")}",
                $"--web.listen-address=127.0.0.1:{prometheusPort}",
                "--log.level=warn",
            ], work);
            var prometheusUri = new Uri($"http://127.0.0.1:{prometheusPort}");
            await SampleProcess.WaitUntilAsync(http, new Uri(prometheusUri, "/-/ready"), prometheus, TimeSpan.FromSeconds(20));

            int requests = await SampleProcess.DriveLoadAsync(http, appUri, TimeSpan.FromSeconds(6), maxRequests: 600);
            Assert.True(requests >= 50, $"Only {requests} requests were sent.");

            string instance = $"127.0.0.1:{appPort}";
            var pending = expressions.Select(e => (e.Panel, e.Legend, Query: Substitute(e.Expr, instance)))
                .Concat(variableQueries.Select(v => (Panel: "variable " + v.Name, Legend: "", Query: Substitute(v.Query, instance))))
                .ToList();
            var problems = new Dictionary<string, string>();
            // Scrapes lag the load by a second or two; a query still empty after 20 s reads a series that is not there.
            DateTime deadline = DateTime.UtcNow + TimeSpan.FromSeconds(Math.Clamp((TestBudget - clock.Elapsed).TotalSeconds - 5, 5, 20));
            do
            {
                foreach (var query in pending.ToList())
                {
                    string? problem = await EvaluateAsync(http, prometheusUri, query.Query);
                    if (problem is null)
                    {
                        pending.Remove(query);
                        problems.Remove(query.Query);
                    }
                    else
                    {
                        problems[query.Query] = $"{query.Panel} [{query.Legend}]: {problem}\n    {query.Query}";
                    }
                }

                if (pending.Count > 0)
                {
                    await Task.Delay(1000);
                }
            }
            while (pending.Count > 0 && DateTime.UtcNow < deadline);

            Assert.True(pending.Count == 0,
                $"{pending.Count} of {expressions.Count + variableQueries.Count} dashboard queries failed or returned no data after {requests} requests:\n"
                + string.Join("\n", problems.Values)
                + $"\n--- sample output ---\n{app.Output}\n--- prometheus output ---\n{prometheus.Output}");
        }
        finally
        {
            try
            {
                Directory.Delete(work, recursive: true);
            }
            catch (IOException)
            {
                // A file still held by the dying process: the temp folder is cleaned later.
            }
        }

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"The test took {clock.Elapsed}.");
    }

    /// <summary>Null when the query parsed and returned at least one series; otherwise what went wrong.</summary>
    private static async Task<string?> EvaluateAsync(HttpClient http, Uri prometheus, string query)
    {
        try
        {
            using HttpResponseMessage response = await http.GetAsync(new Uri(prometheus, "/api/v1/query?query=" + Uri.EscapeDataString(query)));
            string text = await response.Content.ReadAsStringAsync();
            using JsonDocument json = JsonDocument.Parse(text);
            if (json.RootElement.GetProperty("status").GetString() != "success")
            {
                return $"HTTP {(int)response.StatusCode}: {json.RootElement.GetProperty("error").GetString()}";
            }

            JsonElement result = json.RootElement.GetProperty("data").GetProperty("result");
            return result.ValueKind == JsonValueKind.Array && result.GetArrayLength() > 0 ? null : "no data";
        }
        catch (Exception error) when (error is HttpRequestException or TaskCanceledException or JsonException)
        {
            return error.Message;
        }
    }

    private static string Substitute(string expr, string instance)
    {
        string query = expr
            .Replace("$__rate_interval", RateInterval).Replace("${__rate_interval}", RateInterval)
            .Replace("${job}", Job).Replace("$job", Job)
            // The literal address as the regex: its dots match themselves (Grafana would escape them, as \\.).
            .Replace("${instance}", instance).Replace("$instance", instance);
        Assert.DoesNotContain("$", query);
        return query;
    }

    private static IEnumerable<(string Panel, string Legend, string Expr)> Expressions(JsonElement dashboard)
    {
        foreach (JsonElement panel in Panels(dashboard.GetProperty("panels")))
        {
            if (panel.TryGetProperty("targets", out JsonElement targets))
            {
                foreach (JsonElement target in targets.EnumerateArray())
                {
                    if (target.TryGetProperty("expr", out JsonElement expr))
                    {
                        yield return (panel.GetProperty("title").GetString()!, target.TryGetProperty("legendFormat", out JsonElement legend) ? legend.GetString()! : "", expr.GetString()!);
                    }
                }
            }
        }
    }

    private static IEnumerable<JsonElement> Panels(JsonElement panels)
    {
        foreach (JsonElement panel in panels.EnumerateArray())
        {
            yield return panel;
            if (panel.TryGetProperty("panels", out JsonElement nested))
            {
                foreach (JsonElement inner in Panels(nested))
                {
                    yield return inner;
                }
            }
        }
    }

    /// <summary>The template variables' label_values(selector, label), as PromQL that returns data exactly when the variable would have values.</summary>
    private static IEnumerable<(string Name, string Query)> VariableQueries(JsonElement dashboard)
    {
        foreach (JsonElement variable in dashboard.GetProperty("templating").GetProperty("list").EnumerateArray())
        {
            string definition = variable.GetProperty("definition").GetString()!;
            Match match = LabelValues().Match(definition);
            Assert.True(match.Success, $"Variable {variable.GetProperty("name")}: '{definition}' is not label_values(selector, label).");
            yield return (variable.GetProperty("name").GetString()!, $"count by ({match.Groups["label"].Value}) ({match.Groups["selector"].Value})");
        }
    }

    [GeneratedRegex(@"^label_values\((?<selector>.+),\s*(?<label>\w+)\)$")]
    private static partial Regex LabelValues();

    private static JsonDocument LoadDashboard() =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(SampleProcess.RepositoryRoot(), "dashboards", "allochosting.json")));
}
