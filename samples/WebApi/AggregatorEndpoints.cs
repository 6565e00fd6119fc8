using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization;
using AllocHosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.IO;

namespace Microsoft.AspNetCore.Builder;

/// <summary>
/// The aggregator: an endpoint that calls an upstream service over <see cref="HttpClient"/> (here an endpoint of this
/// same app, on 127.0.0.1), deserialises its JSON, summarises it and answers with JSON, in four variants that answer
/// the same bytes and differ only in where the upstream bytes are held:
/// <c>/aggregate</c> in request memory (<see cref="IRequestBuffers.ReadContentAsync"/>, then <see cref="RequestBufferResults.Json{T}(T, System.Text.Json.Serialization.Metadata.JsonTypeInfo{T}, string?, int?)"/>),
/// <c>/aggregate/memorystream</c> on the GC heap (a <see cref="MemoryStream"/> and <c>ToArray</c>, the idiomatic way),
/// <c>/aggregate/arraypool</c> in a hand-managed <see cref="ArrayPool{T}.Shared"/> array, and
/// <c>/aggregate/recyclable</c> in a <see cref="RecyclableMemoryStream"/>.
/// </summary>
public static partial class AggregatorEndpoints
{
    /// <summary>The name of the <see cref="HttpClient"/> that calls the upstream (tests point it elsewhere).</summary>
    public const string UpstreamClient = "aggregator-upstream";

    /// <summary>The most upstream bytes any variant accepts.</summary>
    public const int UpstreamLimit = 1024 * 1024;

    private static readonly RecyclableMemoryStreamManager Streams = new();

    /// <summary>Registers the upstream <see cref="HttpClient"/>: its base address is this server's own HTTP address, on 127.0.0.1.</summary>
    public static IServiceCollection AddAggregatorUpstream(this IServiceCollection services)
    {
        services.AddHttpClient(UpstreamClient, (provider, client) => client.BaseAddress = SelfAddress(provider));
        return services;
    }

    /// <summary>Maps <c>GET /aggregate/upstream?items=N</c> (the upstream: a catalog of N items) and the four aggregate variants.</summary>
    public static WebApplication MapAggregatorEndpoints(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.MapGet("/aggregate/upstream", (int? items) =>
            RequestBufferResults.Json(CreateCatalog(Math.Clamp(items ?? 100, 0, 5_000)), AggregatorJsonContext.Default.Catalog));

        // Request memory: the upstream bytes and the answer live in the request's arena, released when it ends.
        app.MapGet("/aggregate", async (int? items, IHttpClientFactory clients, IRequestBuffers buffers, CancellationToken aborted) =>
        {
            using HttpResponseMessage upstream = await CallUpstreamAsync(clients, items, aborted);
            ReadOnlyMemory<byte> json = await buffers.ReadContentAsync(upstream.Content, UpstreamLimit, aborted);
            Catalog catalog = JsonSerializer.Deserialize(json.Span, AggregatorJsonContext.Default.Catalog)!;
            return RequestBufferResults.Json(Summarise(catalog), AggregatorJsonContext.Default.CatalogSummary);
        });

        // The idiomatic way: the upstream body copied into a MemoryStream, then ToArray (a second copy, a new byte[]).
        app.MapGet("/aggregate/memorystream", async (int? items, IHttpClientFactory clients, CancellationToken aborted) =>
        {
            using HttpResponseMessage upstream = await CallUpstreamAsync(clients, items, aborted);
            using var buffer = new MemoryStream();
            await upstream.Content.CopyToAsync(buffer, aborted);
            byte[] json = buffer.ToArray();
            Catalog catalog = JsonSerializer.Deserialize(json, AggregatorJsonContext.Default.Catalog)!;
            return TypedResults.Json(Summarise(catalog), AggregatorJsonContext.Default.CatalogSummary);
        });

        // By hand on ArrayPool<byte>.Shared: grow by renting a larger array and copying, return it (cleared) at the end.
        app.MapGet("/aggregate/arraypool", async (int? items, IHttpClientFactory clients, CancellationToken aborted) =>
        {
            using HttpResponseMessage upstream = await CallUpstreamAsync(clients, items, aborted);
            byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Clamp(upstream.Content.Headers.ContentLength ?? 16 * 1024, 1, UpstreamLimit) + 1);
            try
            {
                Stream body = await upstream.Content.ReadAsStreamAsync(aborted);
                int length = 0;
                while (true)
                {
                    if (length == buffer.Length)
                    {
                        byte[] larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                        buffer.AsSpan(0, length).CopyTo(larger);
                        ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
                        buffer = larger;
                    }

                    int read = await body.ReadAsync(buffer.AsMemory(length), aborted);
                    if (read == 0)
                    {
                        break;
                    }

                    length += read;
                    if (length > UpstreamLimit)
                    {
                        throw new InvalidDataException($"The upstream answered more than {UpstreamLimit} bytes.");
                    }
                }

                Catalog catalog = JsonSerializer.Deserialize(buffer.AsSpan(0, length), AggregatorJsonContext.Default.Catalog)!;
                return TypedResults.Json(Summarise(catalog), AggregatorJsonContext.Default.CatalogSummary);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
            }
        });

        // Microsoft.IO.RecyclableMemoryStream: pooled blocks, read back as a sequence (no copy out of the pool).
        app.MapGet("/aggregate/recyclable", async (int? items, IHttpClientFactory clients, CancellationToken aborted) =>
        {
            using HttpResponseMessage upstream = await CallUpstreamAsync(clients, items, aborted);
            using RecyclableMemoryStream buffer = Streams.GetStream("aggregate");
            await upstream.Content.CopyToAsync(buffer, aborted);
            var reader = new Utf8JsonReader(buffer.GetReadOnlySequence());
            Catalog catalog = JsonSerializer.Deserialize(ref reader, AggregatorJsonContext.Default.Catalog)!;
            return TypedResults.Json(Summarise(catalog), AggregatorJsonContext.Default.CatalogSummary);
        });

        return app;
    }

    private static async Task<HttpResponseMessage> CallUpstreamAsync(IHttpClientFactory clients, int? items, CancellationToken aborted)
    {
        HttpClient client = clients.CreateClient(UpstreamClient);
        string path = FormattableString.Invariant($"/aggregate/upstream?items={items ?? 100}");
        HttpResponseMessage response = await client.GetAsync(path, HttpCompletionOption.ResponseHeadersRead, aborted);
        try
        {
            response.EnsureSuccessStatusCode();
            return response;
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    // The server's own HTTP address, always on 127.0.0.1 (the sample binds there), whatever host it was bound with.
    private static Uri SelfAddress(IServiceProvider provider)
    {
        string? address = provider.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses
            .FirstOrDefault(a => a.StartsWith("http://", StringComparison.OrdinalIgnoreCase));
        if (address is null)
        {
            return new Uri("http://127.0.0.1:5000/");
        }

        string hostAndPort = address["http://".Length..].Split('/')[0];
        int colon = hostAndPort.LastIndexOf(':');
        string port = colon >= 0 && !hostAndPort.EndsWith(']') ? hostAndPort[(colon + 1)..] : "80";
        return new Uri($"http://127.0.0.1:{port}/");
    }

    private static Catalog CreateCatalog(int count) => new(
        Enumerable.Range(1, count)
            .Select(i => new CatalogItem(i, FormattableString.Invariant($"item-{i:D4}"), (i * 37 % 1000) / 10m + 0.99m, i * 13 % 50))
            .ToArray());

    private static CatalogSummary Summarise(Catalog catalog) => new(
        catalog.Items.Length,
        catalog.Items.Sum(item => item.Price * item.Stock),
        catalog.Items.Sum(item => item.Stock),
        catalog.Items.OrderByDescending(item => item.Price).ThenBy(item => item.Id).Take(3).Select(item => item.Name).ToArray());

    /// <summary>One item of the upstream's catalog.</summary>
    public sealed record CatalogItem(int Id, string Name, decimal Price, int Stock);

    /// <summary>The upstream's answer.</summary>
    public sealed record Catalog(CatalogItem[] Items);

    /// <summary>What the aggregator answers: the count, the stock's value, the units in stock and the three dearest items.</summary>
    public sealed record CatalogSummary(int Count, decimal Value, int Units, string[] Dearest);

    [JsonSerializable(typeof(Catalog))]
    [JsonSerializable(typeof(CatalogSummary))]
    [JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
    internal sealed partial class AggregatorJsonContext : JsonSerializerContext;
}
