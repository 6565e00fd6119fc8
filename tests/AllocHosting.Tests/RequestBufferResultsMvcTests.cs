using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>RequestBufferResults returned from MVC controller actions (MVC executes an action's <see cref="IResult"/>).</summary>
public sealed class RequestBufferResultsMvcTests
{
    [Fact]
    public async Task An_MVC_action_answers_with_request_memory_bytes_json_and_a_stream_each_with_its_exact_length()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapControllers(),
            build: builder => builder.Services.AddControllers().AddApplicationPart(typeof(RequestBufferResultsMvcTests).Assembly));

        using HttpResponseMessage bytes = await app.Client.GetAsync("/mvc-results/bytes?length=70000");
        Assert.Equal(HttpStatusCode.OK, bytes.StatusCode);
        Assert.Equal(70_000, bytes.Content.Headers.ContentLength);
        Assert.Equal("application/x-test", bytes.Content.Headers.ContentType?.MediaType);
        Assert.Equal(TestBytes.Pattern(70_000, 7), await bytes.Content.ReadAsByteArrayAsync());

        using HttpResponseMessage json = await app.Client.GetAsync("/mvc-results/json");
        byte[] body = await json.Content.ReadAsByteArrayAsync();
        Assert.Equal(body.Length, json.Content.Headers.ContentLength);
        Assert.Equal("application/json", json.Content.Headers.ContentType?.MediaType);
        ResultsSummary summary = JsonSerializer.Deserialize(body, ResultsJsonContext.Default.ResultsSummary)!;
        Assert.Equal("mvc", summary.Name);
        Assert.Equal([1, 2, 3], summary.Values);

        using HttpResponseMessage stream = await app.Client.GetAsync("/mvc-results/stream");
        Assert.Equal("written in a request stream", await stream.Content.ReadAsStringAsync());
        Assert.Equal(27, stream.Content.Headers.ContentLength);

        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }
}

/// <summary>The controller of <see cref="RequestBufferResultsMvcTests"/>: IRequestBuffers comes from DI as for minimal APIs.</summary>
[ApiController]
[Route("mvc-results")]
public sealed class RequestBufferResultsController(IRequestBuffers buffers) : ControllerBase
{
    [HttpGet("bytes")]
    public IResult GetBytes(int length)
    {
        Memory<byte> body = buffers.Rent(length);
        TestBytes.Pattern(length, 7).CopyTo(body);
        return RequestBufferResults.Bytes(body, "application/x-test");
    }

    [HttpGet("json")]
    public IResult GetJson() => RequestBufferResults.Json(new ResultsSummary("mvc", 3, [1, 2, 3]), ResultsJsonContext.Default.ResultsSummary);

    [HttpGet("stream")]
    public IResult GetStream()
    {
        RequestBufferStream stream = buffers.CreateStream();
        stream.Write("written in a request stream"u8);
        return RequestBufferResults.Stream(stream, "text/plain");
    }
}
