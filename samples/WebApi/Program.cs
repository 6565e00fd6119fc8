using System.Buffers;
using System.Security.Cryptography;
using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;

// A small web API over the allocator foundation: each /digest request takes a 64 KiB arena slot,
// reads its body into a buffer carved from that slot, and gives the slot back when it ends.
// The hosting extension (AddSwitchableAllocators, IRequestBuffers) will do this for every request.
var builder = WebApplication.CreateBuilder(args);
if (string.IsNullOrEmpty(builder.Configuration["urls"]) && string.IsNullOrEmpty(builder.Configuration["ASPNETCORE_URLS"]))
{
    builder.WebHost.UseUrls("http://127.0.0.1:5000");
}

const int SlotSize = 64 * 1024;
var mapping = MemorySource.CreateDefault();
using var slots = new ArenaMemorySource(mapping, SlotSize, slotCount: 256);
builder.Services.AddSingleton(slots);

var app = builder.Build();

app.MapGet("/", () => Results.Text(
    """
    AllocHosting sample.
      POST /digest       SHA-256 of the request body (up to 64 KiB), read into a per-request arena
      GET  /allocators   arena slots and mapped memory
    """));

app.MapPost("/digest", async (HttpRequest request, ArenaMemorySource arenas, CancellationToken aborted) =>
{
    // One arena per request: a bump allocator over a slot, exposed as a MemoryPool<byte>.
    using var arena = new BumpAllocator(arenas, SlotSize);
    using var pool = new AllocatorMemoryPool(arena);
    const int Limit = SlotSize - 128;
    using IMemoryOwner<byte> buffer = pool.Rent(Limit + 1);   // one spare byte tells an oversized body
    int read = await request.Body.ReadAtLeastAsync(buffer.Memory, buffer.Memory.Length, throwOnEndOfStream: false, aborted);
    if (read > Limit)
    {
        return Results.Problem($"The body is larger than {Limit} bytes.", statusCode: StatusCodes.Status413PayloadTooLarge);
    }

    return Results.Text(Convert.ToHexString(SHA256.HashData(buffer.Memory.Span[..read])));
});

app.MapGet("/allocators", (ArenaMemorySource arenas) => Results.Json(new
{
    arenaSlots = arenas.SlotCount,
    arenaSlotsFree = arenas.FreeSlotCount,
    arenaSlotSize = (ulong)arenas.SlotSize,
    mappedBytesByNode = MemoryMapSource.IsSupported ? MemoryMapSource.GetProcessMappedBytesByNode() : null,
    numa = NumaTopology.Current.ToString(),
}));

app.Run();

/// <summary>The sample's entry point (public so integration tests can host it).</summary>
public partial class Program;
