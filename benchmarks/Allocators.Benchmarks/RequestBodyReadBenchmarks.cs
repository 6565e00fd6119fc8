using System.Buffers;
using System.IO.Pipelines;
using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Issue 10, request memory paths (b): reading a whole request body of <see cref="Size"/> bytes, outside a
/// server. The body comes from one <see cref="FixedBodyPipeReader"/> (4 KiB slices) that is both the request's
/// <c>BodyReader</c> and, through <see cref="PipeReader.AsStream"/>, its <c>Body</c>, so every row reads the same
/// source. Rows: the sample's hand-written <see cref="ArrayPool{T}"/> loop (16 KiB first, doubling by rent and
/// copy, returned cleared: the baseline), <c>CopyToAsync</c> into a <see cref="MemoryStream"/> then
/// <c>ToArray</c>, and <c>ReadBodyAsync</c> into a request arena taken and returned around each operation.
/// </summary>
[MemoryDiagnoser]
public class RequestBodyReadBenchmarks
{
    private const int Slice = 4096;
    private const int FirstArraySize = 16 * 1024;

    private readonly DefaultHttpContext _context = new();
    private FixedBodyPipeReader _body = null!;
    private RequestArenaPool _cleared = null!;
    private RequestArenaPool _notCleared = null!;

    [Params(8 * 1024, 320 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        byte[] body = new byte[Size];
        Random.Shared.NextBytes(body);
        _body = new FixedBodyPipeReader(body, Slice);
        _context.Features.Set<IRequestBodyPipeFeature>(new BodyPipeFeature(_body));
        _context.Request.Body = _body.AsStream(leaveOpen: true);
        _context.Request.ContentLength = Size;   // announced, as HTTP/1.1 clients do for a body they hold
        _cleared = BenchmarkArenaPools.Create(ArenaClearPolicy.ClearUsed);
        _notCleared = BenchmarkArenaPools.Create(ArenaClearPolicy.None);

        // Every row must read the whole body (its result is the length plus the last byte).
        int expected = Size + body[^1];
        foreach (Func<Task<int>> row in new Func<Task<int>>[] { ArrayPoolLoop, MemoryStreamCopy, ReadBodyCleared, ReadBodyNotCleared })
        {
            int result = row().GetAwaiter().GetResult();
            if (result != expected)
            {
                throw new InvalidOperationException($"{row.Method.Name} read {result - body[^1]} bytes of {Size}.");
            }
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _cleared.Dispose();
        _notCleared.Dispose();
    }

    [Benchmark(Baseline = true, Description = "ArrayPool read loop, cleared")]
    public async Task<int> ArrayPoolLoop()
    {
        _body.Reset();
        Stream source = _context.Request.Body;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(FirstArraySize);
        int length = 0;
        try
        {
            while (true)
            {
                if (length == buffer.Length)
                {
                    byte[] larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                    buffer.AsSpan(0, length).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
                    buffer = larger;
                }

                int read = await source.ReadAsync(buffer.AsMemory(length));
                if (read == 0)
                {
                    break;
                }

                length += read;
            }

            return length + buffer[length - 1];
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer, clearArray: true);
        }
    }

    [Benchmark(Description = "MemoryStream CopyToAsync + ToArray")]
    public async Task<int> MemoryStreamCopy()
    {
        _body.Reset();
        using var stream = new MemoryStream();
        await _context.Request.Body.CopyToAsync(stream);
        byte[] body = stream.ToArray();
        return body.Length + body[^1];
    }

    [Benchmark(Description = "ReadBodyAsync, clearing on")]
    public Task<int> ReadBodyCleared() => ReadBodyAsync(_cleared);

    [Benchmark(Description = "ReadBodyAsync, clearing off")]
    public Task<int> ReadBodyNotCleared() => ReadBodyAsync(_notCleared);

    private async Task<int> ReadBodyAsync(RequestArenaPool pool)
    {
        _body.Reset();
        RequestArena arena = pool.RentArena(_context);
        ReadOnlyMemory<byte> body = await arena.ReadBodyAsync(arena.Lease, CancellationToken.None);
        int result = body.Length + body.Span[^1];
        pool.ReturnArena(arena, _context);
        return result;
    }

    private sealed class BodyPipeFeature(PipeReader reader) : IRequestBodyPipeFeature
    {
        public PipeReader Reader => reader;
    }
}
