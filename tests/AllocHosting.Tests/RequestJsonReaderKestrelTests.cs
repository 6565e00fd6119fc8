using System.Net;
using System.Net.Sockets;
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

    [Fact]
    public async Task A_client_that_aborts_mid_body_cancels_the_read_instead_of_a_400_and_the_arena_is_released()
    {
        var outcome = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await KestrelTestApp.StartAsync(a => a.MapPost("/", async (HttpContext context) =>
        {
            try
            {
                // Through the feature: the arena itself implements IRequestBuffers.
                await context.Features.Get<IRequestArenaFeature>()!.ReadJsonAsync(JsonOrderContext.Default.JsonOrder);
                outcome.TrySetResult("read");
            }
            catch (Exception error)
            {
                outcome.TrySetResult(error.GetType().Name);
                throw;
            }
        }));

        using (var client = new TcpClient())
        {
            await client.ConnectAsync(IPAddress.Loopback, app.Http1.Port);
            NetworkStream stream = client.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes($"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {1024 * 1024}\r\n\r\n{{\"name\":\""));
            await stream.WriteAsync(new byte[50_000]);
            await stream.FlushAsync();
            await Task.Delay(200);
            client.Client.LingerState = new LingerOption(true, 0);   // a reset, as a client that goes away
        }

        Assert.Equal(nameof(OperationCanceledException), await outcome.Task.WaitAsync(TimeSpan.FromSeconds(10)));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the aborted request released its chunks");
    }
}
