using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Benchmarks.Peers;
using BenchmarkDotNet.Attributes;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Issue 13: <see cref="NumaHeapAllocator"/> against glibc, jemalloc, mimalloc and
/// <see cref="NativeMemoryAllocator.Shared"/>: one allocation, a touch of its first and last byte
/// and its free, at 64 B, 1 KiB, 16 KiB and 64 KiB (target: within 1.5× of jemalloc, the baseline).
/// </summary>
[MemoryDiagnoser]
public unsafe class NumaHeapBenchmarks
{
    private const nuint Alignment = 16;

    private NumaHeapAllocator _numaHeap = null!;
    private NativePeers.Mimalloc? _mi;
    private NativePeers.Jemalloc? _je;

    [Params(64, 1024, 16 * 1024, 64 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _numaHeap = new NumaHeapAllocator();
        _mi = NativePeers.Mi;
        _je = NativePeers.Je;
    }

    [GlobalCleanup]
    public void Cleanup() => _numaHeap.Dispose();

    [Benchmark(Baseline = true, Description = "jemalloc")]
    public byte Jemalloc() => PeerRoundTrips.Native(_je, Size);

    [Benchmark(Description = "jemalloc, no GC transition")]
    public byte JemallocNoTransition() => PeerRoundTrips.NativeNoTransition(_je, Size);

    [Benchmark(Description = "mimalloc")]
    public byte Mimalloc() => PeerRoundTrips.Native(_mi, Size);

    [Benchmark(Description = "NativeMemory (glibc)")]
    public byte Glibc() => PeerRoundTrips.Glibc(Size);

    [Benchmark(Description = "NativeMemoryAllocator.Shared")]
    public byte NativeAllocator()
    {
        NativeMemoryAllocator allocator = NativeMemoryAllocator.Shared;
        byte* p = allocator.Allocate((nuint)Size, Alignment);
        byte result = PeerRoundTrips.Touch(p, Size);
        allocator.Deallocate(p, (nuint)Size, Alignment);
        return result;
    }

    [Benchmark(Description = "NumaHeapAllocator")]
    public byte NumaHeap()
    {
        byte* p = _numaHeap.Allocate((nuint)Size, Alignment);
        byte result = PeerRoundTrips.Touch(p, Size);
        _numaHeap.Deallocate(p, (nuint)Size, Alignment);
        return result;
    }
}

/// <summary>
/// Issue 13, scaling: each thread loops <see cref="PairsPerThread"/> alloc+touch+free pairs, on one
/// thread and on two at once, per allocator and size. Times are per pair (OperationsPerInvoke), so
/// an allocator's two-thread speed-up is its one-thread time divided by its two-thread time
/// (target ≥ 1.8 for <see cref="NumaHeapAllocator"/>). The second thread is a long-lived worker.
/// </summary>
public unsafe class NumaHeapScalingBenchmarks : IDisposable
{
    private const int PairsPerThread = 200_000;
    private const nuint Alignment = 16;

    private NumaHeapAllocator _numaHeap = null!;
    private SecondThread _second = null!;
    private NativePeers.Mimalloc? _mi;
    private NativePeers.Jemalloc? _je;

    [Params(64, 1024, 16 * 1024, 64 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _numaHeap = new NumaHeapAllocator();
        _second = new SecondThread();
        _mi = NativePeers.Mi;
        _je = NativePeers.Je;
    }

    [GlobalCleanup]
    public void Cleanup() => Dispose();

    public void Dispose()
    {
        _second?.Dispose();
        _numaHeap?.Dispose();
        GC.SuppressFinalize(this);
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = PairsPerThread, Description = "NumaHeapAllocator, 1 thread")]
    public void NumaHeapOne() => NumaHeapLoop();

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "NumaHeapAllocator, 2 threads")]
    public void NumaHeapTwo() => _second.RunWith(NumaHeapLoop);

    [Benchmark(OperationsPerInvoke = PairsPerThread, Description = "jemalloc, 1 thread")]
    public void JemallocOne() => NativeLoop(_je);

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "jemalloc, 2 threads")]
    public void JemallocTwo() => _second.RunWith(() => NativeLoop(_je));

    [Benchmark(OperationsPerInvoke = PairsPerThread, Description = "mimalloc, 1 thread")]
    public void MimallocOne() => NativeLoop(_mi);

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "mimalloc, 2 threads")]
    public void MimallocTwo() => _second.RunWith(() => NativeLoop(_mi));

    [Benchmark(OperationsPerInvoke = PairsPerThread, Description = "NativeMemory (glibc), 1 thread")]
    public void GlibcOne() => GlibcLoop();

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "NativeMemory (glibc), 2 threads")]
    public void GlibcTwo() => _second.RunWith(GlibcLoop);

    [Benchmark(OperationsPerInvoke = PairsPerThread, Description = "NativeMemoryAllocator.Shared, 1 thread")]
    public void NativeAllocatorOne() => NativeAllocatorLoop();

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "NativeMemoryAllocator.Shared, 2 threads")]
    public void NativeAllocatorTwo() => _second.RunWith(NativeAllocatorLoop);

    // Not inlined: the one-thread method and the two threads then run the same compiled loop (inlined
    // into the two-thread method, the loop ran out of the JIT's inlining budget there and the calling
    // thread's copy called the allocator's free, the touch and a span constructor out of line).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void NumaHeapLoop()
    {
        NumaHeapAllocator allocator = _numaHeap;
        int size = Size;
        for (int i = 0; i < PairsPerThread; i++)
        {
            byte* p = allocator.Allocate((nuint)size, Alignment);
            PeerRoundTrips.Touch(p, size);
            allocator.Deallocate(p, (nuint)size, Alignment);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void NativeAllocatorLoop()
    {
        NativeMemoryAllocator allocator = NativeMemoryAllocator.Shared;
        int size = Size;
        for (int i = 0; i < PairsPerThread; i++)
        {
            byte* p = allocator.Allocate((nuint)size, Alignment);
            PeerRoundTrips.Touch(p, size);
            allocator.Deallocate(p, (nuint)size, Alignment);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void NativeLoop(NativePeers.MallocFree? peer)
    {
        int size = Size;
        for (int i = 0; i < PairsPerThread; i++)
        {
            PeerRoundTrips.Native(peer, size);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GlibcLoop()
    {
        int size = Size;
        for (int i = 0; i < PairsPerThread; i++)
        {
            PeerRoundTrips.Glibc(size);
        }
    }
}

/// <summary>
/// Issue 13, fragmentation: a seeded random workload (100 000 blocks of 16 B to 16 KiB, log-uniform;
/// then half of them freed at random and 25 000 others allocated), after which the process's
/// resident growth since the start of the workload is divided by the bytes the live blocks hold:
/// bytes mapped ÷ bytes live, printed once per allocator (one process each) as a "// fragmentation"
/// line; <see cref="NumaHeapAllocator"/> also prints its own mapped segments ÷ live. The timed body
/// is the same workload followed by freeing everything.
/// </summary>
public unsafe class NumaHeapFragmentationBenchmarks
{
    private const int Blocks = 100_000;

    private NumaHeapAllocator _numaHeap = null!;
    private Func<nuint, nint> _allocate = null!;
    private Action<nint, nuint> _free = null!;

    [Params("glibc", "jemalloc", "mimalloc", "NativeMemoryAllocator.Shared", "NumaHeapAllocator")]
    public string Allocator { get; set; } = "";

    [GlobalSetup]
    public void Setup()
    {
        _numaHeap = new NumaHeapAllocator();
        (_allocate, _free) = Allocator switch
        {
            "glibc" => (size => (nint)NativeMemory.Alloc(size), (p, _) => NativeMemory.Free((void*)p)),
            "jemalloc" => Native(NativePeers.Je),
            "mimalloc" => Native(NativePeers.Mi),
            "NativeMemoryAllocator.Shared" => (size => (nint)NativeMemoryAllocator.Shared.Allocate(size, 16), (p, size) => NativeMemoryAllocator.Shared.Deallocate((byte*)p, size, 16)),
            _ => ((Func<nuint, nint>, Action<nint, nuint>))(size => (nint)_numaHeap.Allocate(size, 16), (p, size) => _numaHeap.Deallocate((byte*)p, size, 16)),
        };

        long before = ResidentBytes();
        List<(nint Pointer, nuint Size)> live = Workload();
        long grown = ResidentBytes() - before;
        long liveBytes = live.Sum(b => (long)b.Size);
        string own = Allocator == "NumaHeapAllocator"
            ? string.Create(CultureInfo.InvariantCulture, $", own mapped segments {_numaHeap.MappedBytes / 1024} KiB = {(double)_numaHeap.MappedBytes / liveBytes:F2}")
            : "";
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"// fragmentation {Allocator}: resident growth {grown / 1024} KiB, live {liveBytes / 1024} KiB in {live.Count} blocks, ratio {(double)grown / liveBytes:F2}{own}"));
        FreeAll(live);
    }

    [GlobalCleanup]
    public void Cleanup() => _numaHeap.Dispose();

    [Benchmark(Description = "random workload, then free all")]
    public void RandomWorkload() => FreeAll(Workload());

    private static (Func<nuint, nint>, Action<nint, nuint>) Native(NativePeers.MallocFree? peer) => peer is null
        ? throw new InvalidOperationException("The native peer is not loadable (see benchmarks/run.sh).")
        : (size => (nint)peer.Malloc(size), (p, _) => peer.Free((void*)p));

    private List<(nint Pointer, nuint Size)> Workload()
    {
        var random = new Random(42);
        var live = new List<(nint Pointer, nuint Size)>(Blocks);
        for (int i = 0; i < Blocks; i++)
        {
            live.Add(AllocateTouched(random));
        }

        for (int i = 0; i < Blocks / 2; i++)
        {
            int victim = random.Next(live.Count);
            _free(live[victim].Pointer, live[victim].Size);
            live[victim] = live[^1];
            live.RemoveAt(live.Count - 1);
        }

        for (int i = 0; i < Blocks / 4; i++)
        {
            live.Add(AllocateTouched(random));
        }

        return live;
    }

    // Log-uniform from 16 B to 16 KiB, every page of the block written (so that it is resident).
    private (nint, nuint) AllocateTouched(Random random)
    {
        var size = (nuint)Math.Pow(2, 4 + (random.NextDouble() * 10));
        nint p = _allocate(size);
        for (nuint offset = 0; offset < size; offset += 4096)
        {
            ((byte*)p)[offset] = 1;
        }

        ((byte*)p)[size - 1] = 1;
        return (p, size);
    }

    private void FreeAll(List<(nint Pointer, nuint Size)> live)
    {
        foreach ((nint pointer, nuint size) in live)
        {
            _free(pointer, size);
        }
    }

    private static long ResidentBytes()
    {
        string[] fields = File.ReadAllText("/proc/self/statm").Split(' ');
        return long.Parse(fields[1], CultureInfo.InvariantCulture) * Environment.SystemPageSize;
    }
}
