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
        var section = ReadmeSection.Read("## Per-endpoint arenas", nameof(ReadmeEndpointArenaExampleTests));
        Assert.Equal(2, section.CodeBlocks.Length);
        section.AssertEveryBlockIsIn("ReadmeEndpointArenaExampleTests.cs");
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
