using System.Buffers;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Benchmarks.Peers;
using AllocHosting.Allocators.MemorySources;
using BenchmarkDotNet.Attributes;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// <see cref="MultipleBinarySearchTreeAllocator"/> (over a 64 MiB region from
/// <see cref="MemorySource.CreateDefault"/>, default size classes 32 B … 1 MiB) against the peers of
/// performance.md (target: alloc+free ≤ 2× jemalloc at 64 B–64 KiB), in two patterns:
/// <list type="bullet">
/// <item>ping-pong: one allocation of <see cref="Size"/> bytes, a touch of its first and last byte, its free;</item>
/// <item>churn: a window of 64 live blocks of mixed sizes (log-uniform from 16 B to <see cref="Size"/>);
/// each step frees the oldest, allocates a new one and touches it.</item>
/// </list>
/// </summary>
[MemoryDiagnoser]
public unsafe class TreeAllocatorBenchmarks
{
    private const nuint Alignment = 16;
    private const int Window = 64;
    private const int SizeSequenceLength = 1024; // a power of two: indexed with a mask

    private MultipleBinarySearchTreeAllocator _tree = null!;
    private NativePeers.Mimalloc? _mi;
    private NativePeers.Jemalloc? _je;

    // Churn state, one window per allocator: slot i of a window holds the block allocated with
    // size _churnSizes[(step of that allocation) & mask]; _next* is the next step's index.
    private int[] _churnSizes = null!;
    private nuint[] _treeWindow = null!;
    private nuint[] _glibcWindow = null!;
    private nuint[] _jeWindow = null!;
    private nuint[] _miWindow = null!;
    private byte[][] _poolWindow = null!;
    private int[] _windowSizes = null!;
    private int _nextTree;
    private int _nextGlibc;
    private int _nextJe;
    private int _nextMi;
    private int _nextPool;

    /// <summary>The ping-pong block size, and the largest size in the churn mix.</summary>
    [Params(64, 1024, 16 * 1024, 64 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _tree = new MultipleBinarySearchTreeAllocator(MemorySource.CreateDefault(), 64 << 20);
        _mi = NativePeers.Mi;
        _je = NativePeers.Je;

        var random = new Random(42);
        double logMin = Math.Log(16);
        double logMax = Math.Log(Size);
        _churnSizes = new int[SizeSequenceLength];
        for (int i = 0; i < _churnSizes.Length; i++)
        {
            _churnSizes[i] = (int)Math.Round(Math.Exp(logMin + (random.NextDouble() * (logMax - logMin))));
        }

        // Slot i of every window starts with size _churnSizes[i]: step i frees slot i & (Window - 1).
        _windowSizes = new int[Window];
        _treeWindow = new nuint[Window];
        _glibcWindow = new nuint[Window];
        _jeWindow = new nuint[Window];
        _miWindow = new nuint[Window];
        _poolWindow = new byte[Window][];
        for (int i = 0; i < Window; i++)
        {
            nuint size = (nuint)_churnSizes[i];
            _windowSizes[i] = _churnSizes[i];
            _treeWindow[i] = (nuint)_tree.Allocate(size, Alignment);
            _glibcWindow[i] = (nuint)NativeMemory.Alloc(size);
            _jeWindow[i] = _je is null ? 0 : (nuint)_je.MallocNoTransition(size);
            _miWindow[i] = _mi is null ? 0 : (nuint)_mi.MallocNoTransition(size);
            _poolWindow[i] = ArrayPool<byte>.Shared.Rent((int)size);
        }

        _nextTree = _nextGlibc = _nextJe = _nextMi = _nextPool = Window;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        for (int i = 0; i < Window; i++)
        {
            NativeMemory.Free((void*)_glibcWindow[i]);
            if (_je is not null)
            {
                _je.FreeNoTransition((void*)_jeWindow[i]);
            }

            if (_mi is not null)
            {
                _mi.FreeNoTransition((void*)_miWindow[i]);
            }

            ArrayPool<byte>.Shared.Return(_poolWindow[i]);
        }

        _tree.Dispose();
    }

    // ---- Ping-pong ----

    [Benchmark(Baseline = true, Description = "ArrayPool.Shared")]
    public byte ArrayPoolShared() => PeerRoundTrips.ArrayPoolShared(Size);

    [Benchmark(Description = "NativeMemory (glibc)")]
    public byte Glibc() => PeerRoundTrips.Glibc(Size);

    [Benchmark(Description = "mimalloc")]
    public byte Mimalloc() => PeerRoundTrips.Native(_mi, Size);

    [Benchmark(Description = "mimalloc, no GC transition")]
    public byte MimallocNoTransition() => PeerRoundTrips.NativeNoTransition(_mi, Size);

    [Benchmark(Description = "jemalloc")]
    public byte Jemalloc() => PeerRoundTrips.Native(_je, Size);

    [Benchmark(Description = "jemalloc, no GC transition")]
    public byte JemallocNoTransition() => PeerRoundTrips.NativeNoTransition(_je, Size);

    [Benchmark(Description = "MultipleBinarySearchTreeAllocator")]
    public byte Tree()
    {
        byte* p = _tree.Allocate((nuint)Size, Alignment);
        byte result = PeerRoundTrips.Touch(p, Size);
        _tree.Deallocate(p, (nuint)Size, Alignment);
        return result;
    }

    // ---- Churn: free the oldest of 64 live blocks, allocate a new one ----

    [Benchmark(Description = "churn: ArrayPool.Shared")]
    public byte ChurnArrayPool()
    {
        int slot = _nextPool & (Window - 1);
        int size = _churnSizes[_nextPool++ & (SizeSequenceLength - 1)];
        ArrayPool<byte>.Shared.Return(_poolWindow[slot]);
        byte[] array = ArrayPool<byte>.Shared.Rent(size);
        _poolWindow[slot] = array;
        return PeerRoundTrips.Touch(array.AsSpan(0, size));
    }

    [Benchmark(Description = "churn: NativeMemory (glibc)")]
    public byte ChurnGlibc()
    {
        int slot = _nextGlibc & (Window - 1);
        int size = _churnSizes[_nextGlibc++ & (SizeSequenceLength - 1)];
        NativeMemory.Free((void*)_glibcWindow[slot]);
        byte* p = (byte*)NativeMemory.Alloc((nuint)size);
        _glibcWindow[slot] = (nuint)p;
        return PeerRoundTrips.Touch(p, size);
    }

    [Benchmark(Description = "churn: mimalloc, no GC transition")]
    public byte ChurnMimalloc()
    {
        if (_mi is null)
        {
            return 0;
        }

        int slot = _nextMi & (Window - 1);
        int size = _churnSizes[_nextMi++ & (SizeSequenceLength - 1)];
        _mi.FreeNoTransition((void*)_miWindow[slot]);
        byte* p = (byte*)_mi.MallocNoTransition((nuint)size);
        _miWindow[slot] = (nuint)p;
        return PeerRoundTrips.Touch(p, size);
    }

    [Benchmark(Description = "churn: jemalloc, no GC transition")]
    public byte ChurnJemalloc()
    {
        if (_je is null)
        {
            return 0;
        }

        int slot = _nextJe & (Window - 1);
        int size = _churnSizes[_nextJe++ & (SizeSequenceLength - 1)];
        _je.FreeNoTransition((void*)_jeWindow[slot]);
        byte* p = (byte*)_je.MallocNoTransition((nuint)size);
        _jeWindow[slot] = (nuint)p;
        return PeerRoundTrips.Touch(p, size);
    }

    [Benchmark(Description = "churn: MultipleBinarySearchTreeAllocator")]
    public byte ChurnTree()
    {
        int slot = _nextTree & (Window - 1);
        int size = _churnSizes[_nextTree++ & (SizeSequenceLength - 1)];

        // The tree allocator needs the size a block was allocated with: it is the size drawn
        // Window steps ago, which _windowSizes keeps per slot.
        _tree.Deallocate((byte*)_treeWindow[slot], (nuint)_windowSizes[slot], Alignment);
        byte* p = _tree.Allocate((nuint)size, Alignment);
        _treeWindow[slot] = (nuint)p;
        _windowSizes[slot] = size;
        return PeerRoundTrips.Touch(p, size);
    }
}
