using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AllocHosting.Tests;

/// <summary>
/// The WebApi sample as a real Kestrel server in a child process on 127.0.0.1 (the in-memory
/// TestServer can be neither scraped by Prometheus nor opened in a browser), and bounded load on it.
/// </summary>
internal static class SampleProcess
{
    /// <summary>
    /// Starts the sample with a small budget so that requests overflow, fail and are rejected: four
    /// 64 KiB chunks for the whole process, rejecting at once, so concurrent <c>/render?kb=200</c>
    /// (four chunks each) overflow, exhaust the budget and are refused with 503.
    /// </summary>
    public static ChildProcess Start(int port, string environment = "Production")
    {
        string dll = SampleAssembly();
        // The host running the tests, so that the sample runs on the same runtime even when no dotnet is on PATH.
        string host = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        return ChildProcess.Start(host,
        [
            dll,
            "--urls", $"http://127.0.0.1:{port}",
            "--environment", environment,
            "--Logging:LogLevel:Default=Warning",
            "--Logging:LogLevel:AllocHosting=Error",   // the budget-spent warning is the point here
            "--SwitchableAllocators:MemoryBudget=262144",
            "--SwitchableAllocators:MaxArenaSizePerRequest=262144",
            "--SwitchableAllocators:BudgetPolicy=Reject",
        ], Path.GetDirectoryName(dll));
    }

    private static string SampleAssembly()
    {
        // The copy next to the tests runs when the SDK copied its runtimeconfig; otherwise the sample's own output.
        string local = Path.Combine(AppContext.BaseDirectory, "AllocHosting.Samples.WebApi.dll");
        if (File.Exists(Path.ChangeExtension(local, ".runtimeconfig.json")))
        {
            return local;
        }

        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        string framework = output.Name, configuration = output.Parent!.Name;
        string sample = Path.Combine(RepositoryRoot(), "samples", "WebApi", "bin", configuration, framework, "AllocHosting.Samples.WebApi.dll");
        Assert.True(File.Exists(sample), $"The built sample is not at {sample}.");
        return sample;
    }

    /// <summary>Bounded load on the endpoints that rent request buffers: at most <paramref name="maxRequests"/> requests from eight tasks for at most <paramref name="duration"/>.</summary>
    public static async Task<int> DriveLoadAsync(HttpClient http, Uri app, TimeSpan duration, int maxRequests)
    {
        byte[] body = Enumerable.Range(0, 20_000).Select(i => (byte)i).ToArray();
        int sent = 0;
        var end = DateTime.UtcNow + duration;
        async Task Worker(int worker)
        {
            for (int i = worker; DateTime.UtcNow < end && Interlocked.Increment(ref sent) <= maxRequests; i++)
            {
                using HttpRequestMessage request = (i % 4) switch
                {
                    0 => new HttpRequestMessage(HttpMethod.Post, new Uri(app, "/digest")) { Content = new ByteArrayContent(body) },
                    1 => new HttpRequestMessage(HttpMethod.Post, new Uri(app, "/transform")) { Content = new StringContent("""{"name":"a","values":[1,2,3]}""", Encoding.UTF8, "application/json") },
                    2 => new HttpRequestMessage(HttpMethod.Get, new Uri(app, "/render?kb=100")),
                    _ => new HttpRequestMessage(HttpMethod.Get, new Uri(app, "/render?kb=200")),
                };
                try
                {
                    using HttpResponseMessage response = await http.SendAsync(request);
                    await response.Content.ReadAsByteArrayAsync();
                }
                catch (HttpRequestException)
                {
                    // A refused or reset request still counts as load; the test decides.
                }

                await Task.Delay(5);
            }
        }

        await Task.WhenAll(Enumerable.Range(0, 8).Select(Worker));
        return Math.Min(sent, maxRequests);
    }

    public static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "dashboards", "allochosting.json")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException($"No dashboards/allochosting.json above {AppContext.BaseDirectory}.");
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Waits (bounded) until <paramref name="uri"/> answers with success; fails with the process's output if it exits first.</summary>
    public static async Task WaitUntilAsync(HttpClient http, Uri uri, ChildProcess process, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            Assert.False(process.HasExited, $"{process.Name} exited early:\n{process.Output}");
            try
            {
                using HttpResponseMessage response = await http.GetAsync(uri);
                if (response.IsSuccessStatusCode)
                {
                    return;
                }
            }
            catch (Exception error) when (error is HttpRequestException or TaskCanceledException)
            {
                // Not listening yet.
            }

            Assert.True(DateTime.UtcNow < deadline, $"{uri} did not answer within {timeout}:\n{process.Output}");
            await Task.Delay(200);
        }
    }
}
