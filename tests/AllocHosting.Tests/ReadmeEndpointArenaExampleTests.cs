using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>
/// The code of README.md's "Per-endpoint arenas", compiled and run on the test server (the last test
/// checks that every block of the section is here).
/// </summary>
public sealed class ReadmeEndpointArenaExampleTests
{
    private static void Map(WebApplication app)
    {
        app.MapPost("/imports", async (IRequestBuffers buffers) =>
        {
            ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync();
            return body.Length;
        }).WithRequestArena(o =>
        {
            o.MaxArenaSizePerRequest = 8 * 1024 * 1024;    // imports may hold up to 8 MiB
            o.OverflowPolicy = ArenaOverflowPolicy.Fail;   // and not a byte more
        });

        app.MapGet("/health/live", () => "ok").DisableRequestArena();   // IRequestBuffers throws here
        app.MapControllers();
    }

    [Fact]
    public async Task The_examples_endpoints_answer_with_their_settings()
    {
        await using var app = await TestApp.StartAsync(
            Map,
            options => options.MemoryBudget = 16 * 1024 * 1024,
            build: builder => builder.Services.AddControllers().AddApplicationPart(typeof(ReadmeEndpointArenaExampleTests).Assembly));

        using var content = new ByteArrayContent(new byte[3 * 1024 * 1024]);   // beyond the global 1 MiB, within the endpoint's 8 MiB
        using HttpResponseMessage import = await app.Client.PostAsync("/imports", content);
        Assert.Equal(HttpStatusCode.OK, import.StatusCode);
        Assert.Equal((3 * 1024 * 1024).ToString(System.Globalization.CultureInfo.InvariantCulture), await import.Content.ReadAsStringAsync());
        Assert.Equal("ok", await app.Client.GetStringAsync("/health/live"));
        Assert.Equal("204800", await app.Client.GetStringAsync("/reports/1"));
        Assert.Equal("pong", await app.Client.GetStringAsync("/reports/ping"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the requests released");
    }

    [Fact]
    public void Every_code_block_of_the_README_section_is_compiled_here()
    {
        string root = RepositoryRoot();
        string readme = File.ReadAllText(Path.Combine(root, "README.md"));
        string source = Normalise(File.ReadAllText(Path.Combine(root, "tests", "AllocHosting.Tests", "ReadmeEndpointArenaExampleTests.cs")));
        int start = readme.IndexOf("\n## Per-endpoint arenas", StringComparison.Ordinal);
        Assert.True(start >= 0, "README.md has the section");
        int end = readme.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        string section = readme[start..(end < 0 ? readme.Length : end)];
        Assert.Contains("ReadmeEndpointArenaExampleTests", section, StringComparison.Ordinal);

        string[] blocks = section.Split("```").Where((_, i) => i % 2 == 1).ToArray();
        Assert.Equal(2, blocks.Length);
        Assert.All(blocks, block =>
        {
            Assert.StartsWith("csharp\n", block, StringComparison.Ordinal);
            Assert.Contains(Normalise(block["csharp\n".Length..]), source, StringComparison.Ordinal);
        });
    }

    // Lines trimmed, blank lines dropped: indentation differs between the README and the code here.
    private static string Normalise(string code) =>
        string.Join('\n', code.ReplaceLineEndings("\n").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0));

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "AllocHosting.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("AllocHosting.sln not found above " + AppContext.BaseDirectory);
    }
}

[ApiController]
[Route("reports")]
[RequestArena(MaxArenaSizePerRequest = 4 * 1024 * 1024)]
public sealed class ReportsController(IRequestBuffers buffers) : ControllerBase
{
    [HttpGet("{id}")]
    public int Get(int id) => buffers.Rent(200 * 1024).Length;   // within the controller's 4 MiB

    [HttpGet("ping")]
    [DisableRequestArena]
    public string Ping() => "pong";
}
