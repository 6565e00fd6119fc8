using System.IO.Compression;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AllocHosting.Tests;

/// <summary>Runs the README's "Moving bytes" example as written, on a real Kestrel on 127.0.0.1 with a real upstream, so that the README never shows code that does not work.</summary>
public partial class ReadmeInteropExampleTests
{
    public sealed record Order(int Id, string[] Lines);

    public sealed record Receipt(int Id, int LineCount);

    [JsonSerializable(typeof(Order))]
    [JsonSerializable(typeof(Receipt))]
    [JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
    internal sealed partial class AppJson : JsonSerializerContext;

    [Fact]
    public async Task Readme_moving_bytes_example_runs()
    {
        // The "inventory" upstream: answers how many bytes it was sent, and their Content-Length.
        await using KestrelTestApp inventory = await KestrelTestApp.StartAsync(a => a.MapPost("/reserve", async (HttpRequest request) =>
        {
            using var body = new MemoryStream();
            await request.Body.CopyToAsync(body);
            return Results.Json(new { received = body.Length, contentLength = request.ContentLength });
        }));
        Uri upstreamAddress = inventory.Http1;

        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Production" });
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Services.AddSwitchableAllocators();

        // ---- begin README example (the upstream's address replaced by the local one) ----
        builder.Services.AddProblemDetails();   // malformed JSON bodies answer 400 problem details
        builder.Services.AddHttpClient("inventory", client => client.BaseAddress = upstreamAddress);

        var app = builder.Build();

        // A JSON body deserialised from request memory; the answer serialised into it.
        app.MapPost("/orders", async (IRequestBuffers buffers) =>
        {
            Order? order = await buffers.ReadJsonAsync(AppJson.Default.Order);
            return RequestBufferResults.Json(new Receipt(order!.Id, order.Lines.Length), AppJson.Default.Receipt);
        });

        // The body sent upstream from request memory, and the upstream's answer read back into it.
        app.MapPost("/reserve", async (IRequestBuffers buffers, IHttpClientFactory clients, CancellationToken aborted) =>
        {
            ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync(aborted);
            using var request = new HttpRequestMessage(HttpMethod.Post, "/reserve") { Content = new RequestBufferContent(body) };
            using HttpResponseMessage upstream = await clients.CreateClient("inventory")
                .SendAsync(request, HttpCompletionOption.ResponseHeadersRead, aborted);
            ReadOnlyMemory<byte> answer = await buffers.ReadContentAsync(upstream.Content, maxBytes: 1024 * 1024, aborted);
            return RequestBufferResults.Bytes(answer, "application/json");
        });

        // Stream code (here GZip) writing into request memory, answered with its exact length.
        app.MapGet("/report.gz", async (IRequestBuffers buffers) =>
        {
            using RequestBufferStream stream = buffers.CreateStream();
            await using (var gzip = new GZipStream(stream, CompressionLevel.Fastest, leaveOpen: true))
            {
                await gzip.WriteAsync("the report"u8.ToArray());
            }

            return RequestBufferResults.Stream(stream, "application/gzip");
        });
        // ---- end README example ----

        await app.StartAsync();
        try
        {
            string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var client = new HttpClient { BaseAddress = new Uri(address) };

            using HttpResponseMessage receipt = await client.PostAsJsonAsync("/orders", new Order(7, ["a", "b", "c"]), AppJson.Default.Order);
            Assert.Equal("""{"id":7,"lineCount":3}""", await receipt.Content.ReadAsStringAsync());

            using HttpResponseMessage malformed = await client.PostAsync("/orders", new StringContent("""{"id":""", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
            Assert.Equal("application/problem+json", malformed.Content.Headers.ContentType?.MediaType);

            using HttpResponseMessage reserved = await client.PostAsync("/reserve", new ByteArrayContent(new byte[100_000]));
            Assert.Equal("""{"received":100000,"contentLength":100000}""", await reserved.Content.ReadAsStringAsync());

            using HttpResponseMessage report = await client.GetAsync("/report.gz");
            byte[] zipped = await report.Content.ReadAsByteArrayAsync();
            Assert.Equal(zipped.Length, report.Content.Headers.ContentLength);
            await using var gunzip = new GZipStream(new MemoryStream(zipped), CompressionMode.Decompress);
            using var text = new StreamReader(gunzip);
            Assert.Equal("the report", await text.ReadToEndAsync());
        }
        finally
        {
            await app.StopAsync();
            await app.DisposeAsync();
        }
    }
}
