using System.Buffers;
using System.Security.Cryptography;
using System.Text.Json;
using AllocHosting;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Samples.WebApi;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;

// The AllocHosting sample: every request gets its own native-memory arena (the one line below),
// handlers rent request-scoped buffers through DI, and /metrics shows the allochosting_* series.
var builder = WebApplication.CreateBuilder(args);
if (string.IsNullOrEmpty(builder.Configuration["urls"]) && string.IsNullOrEmpty(builder.Configuration["ASPNETCORE_URLS"]))
{
    builder.WebHost.UseUrls("http://127.0.0.1:5000");
}

builder.Services.AddSwitchableAllocators();   // the one line
builder.Services.AddAggregatorUpstream();     // the HttpClient of the /aggregate endpoints (AggregatorEndpoints.cs)

// Load runs (benchmarks/load/run.sh) set Sample:Metrics=false to measure the app without a listener.
bool metrics = builder.Configuration.GetValue("Sample:Metrics", true);
if (metrics)
{
    var otel = builder.Services.AddOpenTelemetry().WithMetrics(meters =>
    {
        meters.AddSwitchableAllocatorsInstrumentation()
              .AddAspNetCoreInstrumentation()
              .AddRuntimeInstrumentation()
              .AddPrometheusExporter();
        if (!string.IsNullOrEmpty(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
        {
            meters.AddOtlpExporter();
        }
    });
}

var app = builder.Build();

// The middleware's cost. With Sample:BareBranch (set by benchmarks/load/run.sh) /noop-bare is
// answered just before the request-arena middleware (placed explicitly here) and /noop just
// after it; otherwise the one line puts the middleware at the very start and /noop is an endpoint.
if (app.Configuration.GetValue("Sample:BareBranch", false))
{
    app.Use((context, next) => context.Request.Path == "/noop-bare" ? Task.CompletedTask : next(context));
    app.UseRequestArena();
    app.Use((context, next) => context.Request.Path == "/noop" ? Task.CompletedTask : next(context));
}
if (metrics)
{
    app.MapPrometheusScrapingEndpoint();   // GET /metrics
}

app.MapGet("/", () => Results.Text(
    """
    AllocHosting sample: every request has its own native-memory arena.
      POST /digest            SHA-256 of the body (up to 1 MiB), read into request buffers
      POST /digest/arraypool  the same on ArrayPool<byte>.Shared
      POST /digest/new        the same on new byte[]
      POST /transform         JSON {"name": ..., "values": [...]} -> {"name": NAME, "count": n, "sum": s, "values": [2x ...]}
      GET  /render?kb=N       an N KiB text response built in request buffers
      POST /webhook           a signed JSON event (X-Signature: hex HMAC-SHA256) read whole into request memory -> JSON summary
      POST /webhook/memorystream, /webhook/arraypool, /webhook/recyclable   the same on MemoryStream, ArrayPool, RecyclableMemoryStream
      GET  /export?rows=N     N CSV rows (0..100000) gzipped into a request-memory stream (application/gzip, Content-Length)
      GET  /export/memorystream, /export/arraypool, /export/recyclable      the same on MemoryStream, ArrayPool, RecyclableMemoryStream
      GET  /noop              nothing (the middleware's cost)
      GET  /aggregate?items=N the summary of an upstream's JSON (this app's /aggregate/upstream) read into request memory;
                              /aggregate/memorystream, /aggregate/arraypool, /aggregate/recyclable: the same on the GC heap,
                              ArrayPool<byte>.Shared and RecyclableMemoryStream
      GET  /stats             GC counts (gen0, gen2) and committed bytes, working set, mapped arena memory, arena options (JSON)
      GET  /allocators        the live allocator dashboard (Development environment only)
      GET  /metrics           Prometheus metrics (allochosting_*, http_server_*, dotnet_*)
      GET  /health            the allochosting health check
    """));

const int MaxBody = 1024 * 1024;

// The whole body in request memory, read as it arrives (Content-Length is a hint, never trusted);
// beyond the endpoint's limit, 413.
app.MapPost("/digest", async (IRequestBuffers buffers, CancellationToken aborted) =>
    Results.Text(HashHex((await buffers.ReadBodyAsync(aborted)).Span)))
    .WithMetadata(new RequestSizeLimitAttribute(MaxBody));

app.MapPost("/digest/arraypool", async (HttpRequest request, CancellationToken aborted) =>
{
    int size = BodyBufferSize(request);
    byte[] buffer = ArrayPool<byte>.Shared.Rent(size);
    try
    {
        int read = await request.Body.ReadAtLeastAsync(buffer.AsMemory(0, size), size, throwOnEndOfStream: false, aborted);
        return read > MaxBody ? TooLarge() : Results.Text(HashHex(buffer.AsSpan(0, read)));
    }
    finally
    {
        // Cleared like the arena clears what a request used, so the comparison is like with like.
        ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
    }
});

app.MapPost("/digest/new", async (HttpRequest request, CancellationToken aborted) =>
{
    byte[] buffer = new byte[BodyBufferSize(request)];
    int read = await request.Body.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, aborted);
    return read > MaxBody ? TooLarge() : Results.Text(HashHex(buffer.AsSpan(0, read)));
});

app.MapPost("/transform", async (HttpResponse response, IRequestBuffers buffers, CancellationToken aborted) =>
{
    ReadOnlyMemory<byte> body = await buffers.ReadBodyAsync(aborted);
    RequestBufferWriter output = buffers.CreateWriter();
    try
    {
        Transform(body.Span, output);
    }
    catch (JsonException error)
    {
        return Results.Problem($"The body is not the expected JSON: {error.Message}", statusCode: StatusCodes.Status400BadRequest);
    }

    response.ContentType = "application/json";
    response.ContentLength = output.WrittenCount;
    foreach (ReadOnlyMemory<byte> segment in output.WrittenSequence)
    {
        await response.Body.WriteAsync(segment, aborted);
    }

    return Results.Empty;
}).WithMetadata(new RequestSizeLimitAttribute(MaxBody));

app.MapGet("/render", async (int? kb, HttpResponse response, IRequestBuffers buffers, CancellationToken aborted) =>
{
    int size = Math.Clamp(kb ?? 16, 0, 4096) * 1024;
    RequestBufferWriter output = buffers.CreateWriter();
    ReadOnlySpan<byte> line = "AllocHosting renders this response in request buffers.\n"u8;
    int written = 0;
    while (written < size)
    {
        int n = Math.Min(line.Length, size - written);
        line[..n].CopyTo(output.GetSpan(n));
        output.Advance(n);
        written += n;
    }

    response.ContentType = "text/plain";
    response.ContentLength = output.WrittenCount;
    foreach (ReadOnlyMemory<byte> segment in output.WrittenSequence)
    {
        await response.Body.WriteAsync(segment, aborted);
    }
});

app.MapGet("/noop", () => Results.Empty);
app.MapAggregatorEndpoints();   // GET /aggregate[/memorystream|/arraypool|/recyclable]: an upstream's JSON re-served four ways

app.MapWebhookEndpoints();   // POST /webhook and its three twins (WebhookEndpoints.cs)
app.MapExportEndpoints();    // GET /export and its three twins (ExportEndpoints.cs)

// The live allocator page (charts of the arenas, polled from /allocators/data). It shows how the
// process uses memory, so like any diagnostics endpoint it is mapped in Development only; an app
// that serves it elsewhere should add .RequireAuthorization(...).
if (app.Environment.IsDevelopment())
{
    app.MapAllocatorDashboard();   // GET /allocators
}

// Process figures for the README and the load script: GCs so far, working set, mapped arena memory.
app.MapGet("/stats", (IOptions<SwitchableAllocatorOptions> options) => Results.Json(new
{
    gen0Collections = GC.CollectionCount(0),
    gen2Collections = GC.CollectionCount(2),
    gcCommittedBytes = GC.GetGCMemoryInfo().TotalCommittedBytes,
    workingSetBytes = Environment.WorkingSet,
    mappedBytesByNode = MemoryMapSource.IsSupported ? MemoryMapSource.GetProcessMappedBytesByNode() : null,
    numaNodes = NumaTopology.Current.NodeCount,
    arenaKind = options.Value.ArenaKind.ToString(),
    arenaChunkSize = options.Value.InitialArenaSize,
    memoryBudget = options.Value.MemoryBudget,
    clearPolicy = options.Value.ClearPolicy.ToString(),
}));
app.MapHealthChecks("/health");

app.Run();

static int BodyBufferSize(HttpRequest request) =>
    (int)Math.Min(request.ContentLength is long length && length >= 0 ? length + 1 : 64 * 1024, MaxBody + 1); // one spare byte tells an oversized body

static IResult TooLarge() =>
    Results.Problem($"The body is larger than {MaxBody} bytes.", statusCode: StatusCodes.Status413PayloadTooLarge);

static string HashHex(ReadOnlySpan<byte> data)
{
    Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
    SHA256.HashData(data, hash);
    return Convert.ToHexString(hash);
}

// {"name": "x", "values": [1, 2]} -> {"name": "X", "count": 2, "sum": 3, "values": [2, 4]}
static void Transform(ReadOnlySpan<byte> json, IBufferWriter<byte> output)
{
    var reader = new Utf8JsonReader(json);
    string name = "";
    var values = new List<double>();
    while (reader.Read())
    {
        if (reader.TokenType == JsonTokenType.PropertyName && reader.CurrentDepth == 1)
        {
            if (reader.ValueTextEquals("name"u8))
            {
                reader.Read();
                name = reader.GetString() ?? "";
            }
            else if (reader.ValueTextEquals("values"u8))
            {
                reader.Read();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    values.Add(reader.GetDouble());
                }
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }
    }

    using var writer = new Utf8JsonWriter(output);
    writer.WriteStartObject();
    writer.WriteString("name", name.ToUpperInvariant());
    writer.WriteNumber("count", values.Count);
    writer.WriteNumber("sum", values.Sum());
    writer.WriteStartArray("values");
    foreach (double value in values)
    {
        writer.WriteNumberValue(value * 2);
    }

    writer.WriteEndArray();
    writer.WriteEndObject();
}

/// <summary>The sample's entry point (public so integration tests can host it).</summary>
public partial class Program;
