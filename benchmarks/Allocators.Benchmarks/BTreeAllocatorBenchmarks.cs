using System.Runtime.InteropServices;
using AllocHosting.Allocators.Benchmarks.Peers;
using AllocHosting.Allocators.MemorySources;
using BenchmarkDotNet.Attributes;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Issue 14: <see cref="BTreeAllocator"/> (1 MiB regions from <see cref="MemorySource.CreateDefault"/>)
/// against <see cref="MultipleBinarySearchTreeAllocator"/> (a 64 MiB region, 32 B … 1 MiB classes),
/// glibc (<see cref="NativeMemory"/>, the baseline) and jemalloc, in one run, on the same workloads:
/// <list type="bullet">
/// <item>ping-pong: one allocation of <see cref="Size"/> bytes, a touch of its first and last byte, its free;</item>
/// <item>churn: a window of 64 live blocks of mixed sizes (log-uniform from 16 B to <see cref="Size"/>, one
/// sequence for every allocator); each step frees the oldest, allocates a new one and touches it.</item>
/// </list>
/// The time after a long fragmenting workload, the memory it leaves (bytes obtained ÷ bytes live) and
/// the worst latency of one operation come from <see cref="BTreeFragmentationHarness"/>, outside
/// BenchmarkDotNet (a maximum over a million single operations is not a BenchmarkDotNet statistic).
/// </summary>
[MemoryDiagnoser]
public unsafe class BTreeAllocatorBenchmarks
{
    private const nuint Alignment = 16;
    private const int Window = 64;
    private const int SizeSequenceLength = 1024; // a power of two: indexed with a mask

    private BTreeAllocator _btree = null!;
    private MultipleBinarySearchTreeAllocator _tree = null!;
    private NativePeers.Jemalloc? _je;

    // Churn state, one window per allocator: slot i holds the block allocated with size
    // _churnSizes[(step of that allocation) & mask]; the sized allocators keep that size per slot.
    private int[] _churnSizes = null!;
    private nuint[] _btreeWindow = null!;
    private nuint[] _treeWindow = null!;
    private nuint[] _glibcWindow = null!;
    private nuint[] _jeWindow = null!;
    private int[] _btreeSizes = null!;
    private int[] _treeSizes = null!;
    private int _nextBTree;
    private int _nextTree;
    private int _nextGlibc;
    private int _nextJe;

    /// <summary>The ping-pong block size, and the largest size in the churn mix.</summary>
    [Params(64, 1024, 16 * 1024, 64 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _btree = new BTreeAllocator(MemorySource.CreateDefault());
        _tree = new MultipleBinarySearchTreeAllocator(MemorySource.CreateDefault(), 64 << 20);
        _je = NativePeers.Je;

        var random = new Random(42);
        double logMin = Math.Log(16);
        double logMax = Math.Log(Size);
        _churnSizes = new int[SizeSequenceLength];
        for (int i = 0; i < _churnSizes.Length; i++)
        {
            _churnSizes[i] = (int)Math.Round(Math.Exp(logMin + (random.NextDouble() * (logMax - logMin))));
        }

        _btreeWindow = new nuint[Window];
        _treeWindow = new nuint[Window];
        _glibcWindow = new nuint[Window];
        _jeWindow = new nuint[Window];
        _btreeSizes = new int[Window];
        _treeSizes = new int[Window];
        for (int i = 0; i < Window; i++)
        {
            nuint size = (nuint)_churnSizes[i];
            _btreeWindow[i] = (nuint)_btree.Allocate(size, Alignment);
            _treeWindow[i] = (nuint)_tree.Allocate(size, Alignment);
            _glibcWindow[i] = (nuint)NativeMemory.Alloc(size);
            _jeWindow[i] = _je is null ? 0 : (nuint)_je.MallocNoTransition(size);
            _btreeSizes[i] = _treeSizes[i] = _churnSizes[i];
        }

        _nextBTree = _nextTree = _nextGlibc = _nextJe = Window;
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
        }

        _btree.Dispose();
        _tree.Dispose();
    }

    // ---- Ping-pong ----

    [Benchmark(Baseline = true, Description = "NativeMemory (glibc)")]
    public byte Glibc() => PeerRoundTrips.Glibc(Size);

    [Benchmark(Description = "jemalloc, no GC transition")]
    public byte Jemalloc() => PeerRoundTrips.NativeNoTransition(_je, Size);

    [Benchmark(Description = "MultipleBinarySearchTreeAllocator")]
    public byte Tree()
    {
        byte* p = _tree.Allocate((nuint)Size, Alignment);
        byte result = PeerRoundTrips.Touch(p, Size);
        _tree.Deallocate(p, (nuint)Size, Alignment);
        return result;
    }

    [Benchmark(Description = "BTreeAllocator")]
    public byte BTree()
    {
        byte* p = _btree.Allocate((nuint)Size, Alignment);
        byte result = PeerRoundTrips.Touch(p, Size);
        _btree.Deallocate(p, (nuint)Size, Alignment);
        return result;
    }

    // ---- Churn: free the oldest of 64 live blocks, allocate a new one ----

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
        _tree.Deallocate((byte*)_treeWindow[slot], (nuint)_treeSizes[slot], Alignment);
        byte* p = _tree.Allocate((nuint)size, Alignment);
        _treeWindow[slot] = (nuint)p;
        _treeSizes[slot] = size;
        return PeerRoundTrips.Touch(p, size);
    }

    [Benchmark(Description = "churn: BTreeAllocator")]
    public byte ChurnBTree()
    {
        int slot = _nextBTree & (Window - 1);
        int size = _churnSizes[_nextBTree++ & (SizeSequenceLength - 1)];
        _btree.Deallocate((byte*)_btreeWindow[slot], (nuint)_btreeSizes[slot], Alignment);
        byte* p = _btree.Allocate((nuint)size, Alignment);
        _btreeWindow[slot] = (nuint)p;
        _btreeSizes[slot] = size;
        return PeerRoundTrips.Touch(p, size);
    }
}
