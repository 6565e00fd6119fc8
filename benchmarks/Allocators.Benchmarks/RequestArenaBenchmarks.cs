using AllocHosting.Allocators;
using AllocHosting.Allocators.Benchmarks.Peers;
using System.Buffers;
using System.Diagnostics.Metrics;
using BenchmarkDotNet.Attributes;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// The request arena of AllocHosting on the per-request pattern of performance.md (32 rents
/// cycling 64 B … 16 KiB, each touched, then the request ends), exactly as the middleware drives
/// it: take the arena object, rent through it, return it (release, clear by policy, record the
/// usage histogram). Peers: ArrayPool.Shared with and without clearing, and new byte[].
/// Also: one Rent including the Memory&lt;byte&gt; it returns, and the cost of metrics with a
/// listener (a MeterListener enabling every AllocHosting instrument, as an OpenTelemetry
/// MeterProvider would) against none.
/// </summary>
[MemoryDiagnoser]
public unsafe class RequestArenaBenchmarks
{
    private const int Rents = 32;
    private static readonly int[] s_sizes = [64, 256, 1024, 4096, 16384];

    private readonly byte[][] _arrays = new byte[Rents][];
    private readonly DefaultHttpContext _context = new();
    private BenchmarkMeterFactory _meters = null!;
    private MeterListener? _listener;
    private RequestArenaPool _bump = null!;
    private RequestArenaPool _bumpCleared = null!;
    private RequestArenaPool _bitSet = null!;
    private RequestArenaPool _bumpListened = null!;
    private RequestArenaPool _bumpQuarantined = null!;
    private RequestArena _rentArena = null!;
    private BumpAllocator _bareBump = null!;
    private BitSetAllocator _bareBitSet = null!;
    private int _rentLease;
    private int _rentCount;
    private ArenaChunkMemoryManager<byte> _bareManager = null!;
    private Memory<byte> _bareWhole;
    private byte* _bareBase;
    private int _bareRentCount;

    [GlobalSetup]
    public void Setup()
    {
        _meters = new BenchmarkMeterFactory();
        _bump = CreatePool(RequestArenaKind.Bump, ArenaClearPolicy.None, new BenchmarkMeterFactory());
        _bumpCleared = CreatePool(RequestArenaKind.Bump, ArenaClearPolicy.ClearUsed, new BenchmarkMeterFactory());
        _bitSet = CreatePool(RequestArenaKind.BitSet, ArenaClearPolicy.None, new BenchmarkMeterFactory());
        _bumpListened = CreatePool(RequestArenaKind.Bump, ArenaClearPolicy.None, _meters);
        _bumpQuarantined = CreatePool(RequestArenaKind.Bump, ArenaClearPolicy.ClearUsed, new BenchmarkMeterFactory(), new SwitchableAllocatorOptions().ReuseDelay);

        // Only the last pool's meter is listened to, so the metrics-on and metrics-off runs differ
        // in that alone.
        _listener = new MeterListener
        {
            InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Scope == _meters)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            },
        };
        _listener.SetMeasurementEventCallback<long>(static (_, _, _, _) => { });
        _listener.Start();

        _rentArena = _bump.RentArena(_context);
        _rentLease = _rentArena.Lease;
        _bareBump = new BumpAllocator(Allocators.MemorySources.NativeMemorySource.Shared, 256 * 1024);
        _bareBitSet = new BitSetAllocator(Allocators.MemorySources.NativeMemorySource.Shared, 64, 256 * 1024);
        _bareBase = _bareBump.Allocate(16, 16);
        _bareBump.Reset();
        _bareManager = new ArenaChunkMemoryManager<byte>(null, _bareBase, 256 * 1024);
        _bareWhole = _bareManager.Memory;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _bump.ReturnArena(_rentArena, _context);
        _listener?.Dispose();
        _bump.Dispose();
        _bumpCleared.Dispose();
        _bitSet.Dispose();
        _bumpListened.Dispose();
        _bumpQuarantined.Dispose();
        _bareBump.Dispose();
        _bareBitSet.Dispose();
        _meters.Dispose();
    }

    [Benchmark(Baseline = true, Description = "ArrayPool.Shared")]
    public int ArrayPoolShared() => ArrayPoolRequest(clear: false);

    [Benchmark(Description = "ArrayPool.Shared, clearArray")]
    public int ArrayPoolSharedCleared() => ArrayPoolRequest(clear: true);

    [Benchmark(Description = "new byte[]")]
    public int NewArray()
    {
        int sum = 0;
        for (int i = 0; i < Rents; i++)
        {
            byte[] array = new byte[s_sizes[i % s_sizes.Length]];
            sum += PeerRoundTrips.Touch(array);
            _arrays[i] = array;
        }

        return sum;
    }

    [Benchmark(Description = "request arena, bump, clearing off")]
    public int ArenaBump() => ArenaRequest(_bump);

    [Benchmark(Description = "request arena, bump, clearing on")]
    public int ArenaBumpCleared() => ArenaRequest(_bumpCleared);

    /// <summary>
    /// The default ReuseDelay (the other pools turn it off): in a loop this tight every chunk of the
    /// budget is in the quarantine at once, so each request takes the oldest one early (the path a
    /// server releasing more than budget ÷ delay chunks per second would take).
    /// </summary>
    [Benchmark(Description = "request arena, bump, clearing on, ReuseDelay 100 ms")]
    public int ArenaBumpQuarantined() => ArenaRequest(_bumpQuarantined);

    [Benchmark(Description = "request arena, bit set, clearing off")]
    public int ArenaBitSet() => ArenaRequest(_bitSet);

    [Benchmark(Description = "request arena, bump, metrics listened")]
    public int ArenaBumpMetricsOn() => ArenaRequest(_bumpListened);

    /// <summary>The floor under the bump arena: the same 32 allocations on a bare bump allocator's single-threaded path, then a reset.</summary>
    [Benchmark(Description = "bare bump, single-threaded path")]
    public int BareBumpSingleThreaded()
    {
        int sum = 0;
        for (int i = 0; i < Rents; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            sum += PeerRoundTrips.Touch(new Span<byte>(_bareBump.Allocate((nuint)size, 16), size));
        }

        _bareBump.Reset();
        return sum;
    }

    /// <summary>
    /// The floor under the arena for an API that hands out <see cref="Memory{T}"/>: the same 32
    /// single-threaded bump allocations, each sliced from a <see cref="Memory{T}"/> of a memory
    /// manager over the region and touched through its <see cref="Memory{T}.Span"/> (a virtual
    /// <c>GetSpan</c>, as every rent of the arena is), then a reset.
    /// </summary>
    [Benchmark(Description = "bare bump + Memory<byte>.Span, single-threaded")]
    public int BareBumpMemorySingleThreaded()
    {
        int sum = 0;
        for (int i = 0; i < Rents; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte* pointer = _bareBump.Allocate((nuint)size, 16);
            sum += PeerRoundTrips.Touch(_bareWhole.Slice((int)(pointer - _bareBase), size).Span);
        }

        _bareBump.Reset();
        return sum;
    }

    /// <summary>The floor under a thread-safe rent: the same 32 allocations on the bump allocator's lock-free concurrent path (one compare-exchange and one interlocked add each), then a reset.</summary>
    [Benchmark(Description = "bare bump, concurrent path")]
    public int BareBumpConcurrent()
    {
        int sum = 0;
        for (int i = 0; i < Rents; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            sum += PeerRoundTrips.Touch(new Span<byte>(_bareBump.AllocateConcurrent((nuint)size, 16), size));
        }

        _bareBump.Reset();
        return sum;
    }

    /// <summary>The floor under the bit set arena: the same 32 allocations on a bare bit set allocator of 64-byte blocks (single-threaded, no lock), then a reset.</summary>
    [Benchmark(Description = "bare bit set, single-threaded")]
    public int BareBitSet()
    {
        int sum = 0;
        for (int i = 0; i < Rents; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            sum += PeerRoundTrips.Touch(new Span<byte>(_bareBitSet.Allocate((nuint)size, 16), size));
        }

        _bareBitSet.Reset();
        return sum;
    }

    /// <summary>One Rent of 64 bytes including the Memory it returns (the arena is reset out of band every 512 rents).</summary>
    [Benchmark(Description = "IRequestBuffers.Rent(64)")]
    public int RentOnce()
    {
        if (++_rentCount == 512)
        {
            _rentCount = 0;
            _bump.ReturnArena(_rentArena, _context);
            _rentArena = _bump.RentArena(_context);
            _rentLease = _rentArena.Lease;
        }

        return _rentArena.Rent(64, _rentLease).Length;
    }

    /// <summary>The floor under one Rent(64): a bare bump allocation of 64 bytes on the single-threaded path and a slice of a Memory over the region (the allocator is reset out of band every 512 rents).</summary>
    [Benchmark(Description = "bare bump 64 + its Memory<byte>")]
    public int BareBumpMemoryOnce()
    {
        if (++_bareRentCount == 512)
        {
            _bareRentCount = 0;
            _bareBump.Reset();
        }

        byte* pointer = _bareBump.Allocate(64, 16);
        return _bareWhole.Slice((int)(pointer - _bareBase), 64).Length;
    }

    /// <summary>A request that rents nothing: the arena taken from the pool and returned to it (activation, release).</summary>
    [Benchmark(Description = "empty request")]
    public int EmptyRequest()
    {
        RequestArena arena = _bump.RentArena(_context);
        int lease = arena.Lease;
        _bump.ReturnArena(arena, _context);
        return lease;
    }

    /// <summary>A request that rents 64 bytes once: take, rent, release (the chunk comes from and goes back to the processor's hot slot).</summary>
    [Benchmark(Description = "request renting Rent(64) once")]
    public int RequestRentingOnce()
    {
        RequestArena arena = _bump.RentArena(_context);
        int length = arena.Rent(64, arena.Lease).Length;
        _bump.ReturnArena(arena, _context);
        return length;
    }

    private static RequestArenaPool CreatePool(RequestArenaKind kind, ArenaClearPolicy clear, IMeterFactory meters, TimeSpan reuseDelay = default)
    {
        var options = new SwitchableAllocatorOptions
        {
            ReuseDelay = reuseDelay,
            ArenaKind = kind,
            ClearPolicy = clear,
            InitialArenaSize = 256 * 1024,
            MaxArenaSizePerRequest = 256 * 1024,
            MemoryBudget = 16 * 256 * 1024,
        };
        return new(
            Options.Create(options),
            ArenaChunkSource.ForThisMachine(options, NullLogger.Instance),
            new AllocHostingMetrics(meters, new SwitchableAllocator()),
            NullLogger<RequestArenaPool>.Instance,
            TimeProvider.System);
    }


    private int ArrayPoolRequest(bool clear)
    {
        int sum = 0;
        for (int i = 0; i < Rents; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte[] array = ArrayPool<byte>.Shared.Rent(size);
            sum += PeerRoundTrips.Touch(array.AsSpan(0, size));
            _arrays[i] = array;
        }

        for (int i = 0; i < Rents; i++)
        {
            ArrayPool<byte>.Shared.Return(_arrays[i], clear);
        }

        return sum;
    }

    private int ArenaRequest(RequestArenaPool pool)
    {
        RequestArena arena = pool.RentArena(_context);
        int lease = arena.Lease;
        int sum = 0;
        for (int i = 0; i < Rents; i++)
        {
            sum += PeerRoundTrips.Touch(arena.Rent(s_sizes[i % s_sizes.Length], lease).Span);
        }

        pool.ReturnArena(arena, _context);
        return sum;
    }

    private sealed class BenchmarkMeterFactory : IMeterFactory
    {
        private readonly List<Meter> _meters = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options.Name, options.Version, options.Tags, scope: this);
            _meters.Add(meter);
            return meter;
        }

        public void Dispose()
        {
            foreach (Meter meter in _meters)
            {
                meter.Dispose();
            }
        }
    }
}
