using System.Buffers;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.Benchmarks.Peers;
using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// The request arena pool on one thread and on two at once (per request; two threads at half the
/// time = 2×): a request that rents nothing (the middleware's fixed cost), one that rents once, and
/// the per-request pattern of 32 rents, beside ArrayPool.Shared on the same 32 rents.
/// </summary>
public class RequestArenaScalingBenchmarks : IDisposable
{
    private const int RequestsPerThread = 100_000;
    private static readonly int[] s_sizes = [64, 256, 1024, 4096, 16384];

    private RequestArenaPool _pool = null!;
    private SecondThread _second = null!;

    [GlobalSetup]
    public void Setup()
    {
        var options = new SwitchableAllocatorOptions
        {
            ClearPolicy = ArenaClearPolicy.None,
            ReuseDelay = TimeSpan.Zero,   // the quarantine's cost is RequestArenaBenchmarks' row
            InitialArenaSize = 256 * 1024,
            MaxArenaSizePerRequest = 256 * 1024,
            MemoryBudget = 16 * 256 * 1024,
        };
        _pool = new RequestArenaPool(
            Options.Create(options),
            ArenaChunkSource.ForThisMachine(options, NullLogger.Instance),
            new AllocHostingMetrics(new NoMeterFactory(), new SwitchableAllocator()),
            NullLogger<RequestArenaPool>.Instance,
            TimeProvider.System);
        _second = new SecondThread();
    }

    [GlobalCleanup]
    public void Cleanup() => Dispose();

    public void Dispose()
    {
        _second?.Dispose();
        _pool?.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = RequestsPerThread, Description = "no rent, 1 thread")]
    public void NoRentOneThread() => Requests(0);

    [Benchmark(OperationsPerInvoke = 2 * RequestsPerThread, Description = "no rent, 2 threads")]
    public void NoRentTwoThreads() => _second.RunWith(() => Requests(0));

    [Benchmark(OperationsPerInvoke = RequestsPerThread, Description = "1 rent, 1 thread")]
    public void OneRentOneThread() => Requests(1);

    [Benchmark(OperationsPerInvoke = 2 * RequestsPerThread, Description = "1 rent, 2 threads")]
    public void OneRentTwoThreads() => _second.RunWith(() => Requests(1));

    [Benchmark(OperationsPerInvoke = RequestsPerThread, Description = "32 rents, 1 thread")]
    public void PatternOneThread() => Requests(32);

    [Benchmark(OperationsPerInvoke = 2 * RequestsPerThread, Description = "32 rents, 2 threads")]
    public void PatternTwoThreads() => _second.RunWith(() => Requests(32));

    [Benchmark(OperationsPerInvoke = RequestsPerThread, Description = "ArrayPool.Shared 32 rents, 1 thread")]
    public void ArrayPoolOneThread() => ArrayPoolRequests();

    [Benchmark(OperationsPerInvoke = 2 * RequestsPerThread, Description = "ArrayPool.Shared 32 rents, 2 threads")]
    public void ArrayPoolTwoThreads() => _second.RunWith(ArrayPoolRequests);

    // Not inlined, here and in the other loops: the one-thread method and the two threads then run the
    // same compiled loop (see NumaHeapScalingBenchmarks: inlined into a two-thread method through the
    // delegate, a loop can run out of the JIT's inlining budget in the calling thread's copy only).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Requests(int rents)
    {
        var context = new DefaultHttpContext();
        for (int r = 0; r < RequestsPerThread; r++)
        {
            RequestArena arena = _pool.RentArena(context);
            int lease = arena.Lease;
            for (int i = 0; i < rents; i++)
            {
                PeerRoundTrips.Touch(arena.Rent(s_sizes[i % s_sizes.Length], lease).Span);
            }

            _pool.ReturnArena(arena, context);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ArrayPoolRequests()
    {
        byte[][] arrays = new byte[32][];
        for (int r = 0; r < RequestsPerThread; r++)
        {
            for (int i = 0; i < arrays.Length; i++)
            {
                int size = s_sizes[i % s_sizes.Length];
                arrays[i] = ArrayPool<byte>.Shared.Rent(size);
                PeerRoundTrips.Touch(arrays[i].AsSpan(0, size));
            }

            for (int i = 0; i < arrays.Length; i++)
            {
                ArrayPool<byte>.Shared.Return(arrays[i]);
            }
        }
    }

    private sealed class NoMeterFactory : IMeterFactory
    {
        public Meter Create(MeterOptions options) => new(options.Name, options.Version, options.Tags, scope: this);

        public void Dispose()
        {
        }
    }
}
