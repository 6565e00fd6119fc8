using System.Buffers;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Benchmarks.Peers;
using AllocHosting.Allocators.MemorySources;
using BenchmarkDotNet.Attributes;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// The per-request pattern of performance.md: 32 allocations cycling 64, 256, 1 024, 4 096 and
/// 16 384 bytes (131 KiB in all), each touched, then everything released. Our arenas release with
/// one reset; the general-purpose peers free each block.
/// </summary>
[MemoryDiagnoser]
public unsafe class PerRequestBenchmarks
{
    private const int Allocations = 32;
    private const nuint Alignment = 16;
    private static readonly int[] s_sizes = [64, 256, 1024, 4096, 16384];

    private readonly void*[] _blocks = new void*[Allocations];
    private readonly byte[][] _arrays = new byte[Allocations][];
    private BumpAllocator _bump = null!;
    private BitSetAllocator _bitSet = null!;
    private BareBump _bare = null!;
    private NativePeers.Mimalloc? _mi;
    private NativePeers.Jemalloc? _je;

    [GlobalSetup]
    public void Setup()
    {
        _bump = new BumpAllocator(NativeMemorySource.Shared, 256 * 1024);
        _bitSet = new BitSetAllocator(NativeMemorySource.Shared, 64, 256 * 1024);
        _bare = new BareBump(256 * 1024);
        _mi = NativePeers.Mi;
        _je = NativePeers.Je;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _bump.Dispose();
        _bitSet.Dispose();
        _bare.Dispose();
    }

    [Benchmark(Baseline = true, Description = "ArrayPool.Shared")]
    public int ArrayPoolShared()
    {
        int sum = 0;
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte[] array = ArrayPool<byte>.Shared.Rent(size);
            sum += PeerRoundTrips.Touch(array.AsSpan(0, size));
            _arrays[i] = array;
        }

        for (int i = 0; i < Allocations; i++)
        {
            ArrayPool<byte>.Shared.Return(_arrays[i]);
        }

        return sum;
    }

    [Benchmark(Description = "new byte[]")]
    public int NewArray()
    {
        int sum = 0;
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte[] array = new byte[size];
            sum += PeerRoundTrips.Touch(array);
            _arrays[i] = array;
        }

        return sum;
    }

    [Benchmark(Description = "NativeMemory (glibc)")]
    public int Glibc()
    {
        int sum = 0;
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte* p = (byte*)NativeMemory.Alloc((nuint)size);
            sum += PeerRoundTrips.Touch(new Span<byte>(p, size));
            _blocks[i] = p;
        }

        for (int i = 0; i < Allocations; i++)
        {
            NativeMemory.Free(_blocks[i]);
        }

        return sum;
    }

    [Benchmark(Description = "jemalloc")]
    public int Jemalloc()
    {
        if (_je is null)
        {
            return 0;
        }

        int sum = 0;
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte* p = (byte*)_je.Malloc((nuint)size);
            sum += PeerRoundTrips.Touch(new Span<byte>(p, size));
            _blocks[i] = p;
        }

        for (int i = 0; i < Allocations; i++)
        {
            _je.Free(_blocks[i]);
        }

        return sum;
    }

    [Benchmark(Description = "mimalloc")]
    public int Mimalloc()
    {
        if (_mi is null)
        {
            return 0;
        }

        int sum = 0;
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte* p = (byte*)_mi.Malloc((nuint)size);
            sum += PeerRoundTrips.Touch(new Span<byte>(p, size));
            _blocks[i] = p;
        }

        for (int i = 0; i < Allocations; i++)
        {
            _mi.Free(_blocks[i]);
        }

        return sum;
    }

    [Benchmark(Description = "mimalloc heap per request")]
    public int MimallocHeap()
    {
        if (_mi is null)
        {
            return 0;
        }

        int sum = 0;
        void* heap = _mi.HeapNew();
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte* p = (byte*)_mi.HeapMalloc(heap, (nuint)size);
            sum += PeerRoundTrips.Touch(new Span<byte>(p, size));
        }

        _mi.HeapDestroy(heap);
        return sum;
    }

    [Benchmark(Description = "bare bump pointer")]
    public int BareBumpPointer()
    {
        int sum = 0;
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte* p = _bare.Allocate((nuint)size, Alignment);
            sum += PeerRoundTrips.Touch(new Span<byte>(p, size));
        }

        _bare.Reset();
        return sum;
    }

    [Benchmark(Description = "BumpAllocator, reset once")]
    public int Bump()
    {
        int sum = 0;
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte* p = _bump.Allocate((nuint)size, Alignment);
            sum += PeerRoundTrips.Touch(new Span<byte>(p, size));
        }

        _bump.Reset();
        return sum;
    }

    [Benchmark(Description = "BitSetAllocator (64 B blocks), reset once")]
    public int BitSet()
    {
        int sum = 0;
        for (int i = 0; i < Allocations; i++)
        {
            int size = s_sizes[i % s_sizes.Length];
            byte* p = _bitSet.Allocate((nuint)size, Alignment);
            sum += PeerRoundTrips.Touch(new Span<byte>(p, size));
        }

        _bitSet.Reset();
        return sum;
    }
}
