using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace AllocHosting.Tests;

/// <summary>IRequestBuffers.ReadJsonAsync on a real Kestrel (127.0.0.1): bad JSON answers 400, an oversized body 413, uncaught.</summary>
public class RequestJsonReaderKestrelTests
{
    [Fact]
    public async Task Uncaught_bad_JSON_is_400_and_an_oversized_body_413_on_Kestrel()
    {
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            context.Features.Get<IHttpMaxRequestBodySizeFeature>()!.MaxRequestBodySize = 10_000;
            JsonOrder? order = await buffers.ReadJsonAsync(JsonOrderContext.Default.JsonOrder);
            return order!.Name;
        }));
        using var client = new HttpClient { BaseAddress = app.Http1 };

        using HttpResponseMessage valid = await client.PostAsync("/", new StringContent("""{"name":"k","count":0,"values":[]}""", Encoding.UTF8, "application/json"));
        using HttpResponseMessage malformed = await client.PostAsync("/", new StringContent("""{"name":k}""", Encoding.UTF8, "application/json"));
        using HttpResponseMessage empty = await client.PostAsync("/", new ByteArrayContent([]));
        using var chunked = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes($$"""{"name":"{{new string('a', 50_000)}}"}""")));
        chunked.Headers.ContentLength = null;
        using HttpResponseMessage tooLarge = await client.PostAsync("/", chunked);

        Assert.Equal("k", await valid.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
        Assert.Equal("The request body is not valid JSON for the expected type.", await malformed.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.BadRequest, empty.StatusCode);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released its chunks");
    }
}
