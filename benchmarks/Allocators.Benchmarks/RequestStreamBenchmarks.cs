using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Microsoft.IO;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Issue 10, request memory paths (a): a request's scratch stream. Write <see cref="Size"/> bytes in 4 KiB
/// writes, seek to 0, read everything back in 4 KiB reads; one stream per operation, as one per request.
/// <see cref="MemoryStream"/> (the baseline), <c>RecyclableMemoryStream</c> (one shared manager, zeroing
/// buffers on return as the sample's does, and with default options), and <see cref="RequestBufferStream"/>
/// over a request arena taken and returned around each operation (clearing on, the default, and off).
/// </summary>
[MemoryDiagnoser]
public class RequestStreamBenchmarks
{
    private const int Piece = 4096;

    private readonly byte[] _source = new byte[Piece];
    private readonly byte[] _destination = new byte[Piece];
    private readonly DefaultHttpContext _context = new();
    private RecyclableMemoryStreamManager _zeroing = null!;
    private RecyclableMemoryStreamManager _defaults = null!;
    private RequestArenaPool _cleared = null!;
    private RequestArenaPool _notCleared = null!;

    [Params(8 * 1024, 320 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        Random.Shared.NextBytes(_source);
        _zeroing = new RecyclableMemoryStreamManager(new RecyclableMemoryStreamManager.Options
        {
            MaximumSmallPoolFreeBytes = 16 * 1024 * 1024,
            MaximumLargePoolFreeBytes = 16 * 1024 * 1024,
            ZeroOutBuffer = true,
        });
        _defaults = new RecyclableMemoryStreamManager();
        _cleared = BenchmarkArenaPools.Create(ArenaClearPolicy.ClearUsed);
        _notCleared = BenchmarkArenaPools.Create(ArenaClearPolicy.None);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _cleared.Dispose();
        _notCleared.Dispose();
    }

    [Benchmark(Baseline = true, Description = "MemoryStream")]
    public int MemoryStreamRoundTrip()
    {
        using var stream = new MemoryStream();
        return RoundTrip(stream);
    }

    [Benchmark(Description = "RecyclableMemoryStream, zeroing (as the sample)")]
    public int RecyclableZeroing()
    {
        using var stream = _zeroing.GetStream();
        return RoundTrip(stream);
    }

    [Benchmark(Description = "RecyclableMemoryStream, default options")]
    public int RecyclableDefaults()
    {
        using var stream = _defaults.GetStream();
        return RoundTrip(stream);
    }

    [Benchmark(Description = "RequestBufferStream, clearing on")]
    public int RequestBufferStreamCleared() => ArenaRoundTrip(_cleared);

    [Benchmark(Description = "RequestBufferStream, clearing off")]
    public int RequestBufferStreamNotCleared() => ArenaRoundTrip(_notCleared);

    private int ArenaRoundTrip(RequestArenaPool pool)
    {
        RequestArena arena = pool.RentArena(_context);
        int result;
        using (RequestBufferStream stream = arena.CreateStream(arena.Lease))
        {
            result = RoundTrip(stream);
        }

        pool.ReturnArena(arena, _context);
        return result;
    }

    private int RoundTrip(Stream stream)
    {
        for (int written = 0; written < Size; written += Piece)
        {
            stream.Write(_source);
        }

        stream.Seek(0, SeekOrigin.Begin);
        int total = 0;
        int read;
        while ((read = stream.Read(_destination)) > 0)
        {
            total += read;
        }

        return total + _destination[Piece - 1];
    }
}
