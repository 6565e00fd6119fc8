using AllocHosting.Allocators.Benchmarks.Peers;
using BenchmarkDotNet.Attributes;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// What the global allocators add to the library they wrap (issue 12 item 5, issue 13 part 1):
/// alloc+touch+free of 64 B, 1 KiB and 16 KiB on one thread through
/// <see cref="NativeMemoryAllocator.Shared"/> against raw <c>NativeMemory.Alloc</c>/<c>Free</c>
/// (target ≤ 1.3×), and through <see cref="ExternalNativeAllocator"/> against calling mimalloc's and
/// jemalloc's own exports directly, with the same GC transition (target ≤ 1.2×). The adaptors are
/// unchecked instances, as the switchable allocator's global uses them, counting their statistics
/// (the default) and not counting them (<c>countStatistics: false</c>). A missing library's rows
/// measure nothing (its note is printed once).
/// </summary>
public unsafe class GlobalAllocatorOverheadBenchmarks
{
    private const nuint Alignment = 16;

    private NativeMemoryAllocator _shared = null!;
    private ExternalNativeAllocator? _miAdaptor;
    private ExternalNativeAllocator? _jeAdaptor;
    private ExternalNativeAllocator? _miUncounted;
    private ExternalNativeAllocator? _jeUncounted;
    private NativePeers.Mimalloc? _mi;
    private NativePeers.Jemalloc? _je;

    [Params(64, 1024, 16 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _shared = NativeMemoryAllocator.Shared;
        _mi = NativePeers.Mi;
        _je = NativePeers.Je;
        _miAdaptor = ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Mimalloc, out ExternalNativeAllocator? mi) ? mi : null;
        _jeAdaptor = ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Jemalloc, out ExternalNativeAllocator? je) ? je : null;
        _miUncounted = ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Mimalloc, out mi, countStatistics: false) ? mi : null;
        _jeUncounted = ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Jemalloc, out je, countStatistics: false) ? je : null;
    }

    [Benchmark(Baseline = true, Description = "NativeMemory (glibc), raw")]
    public byte Glibc() => PeerRoundTrips.Glibc(Size);

    [Benchmark(Description = "NativeMemoryAllocator.Shared")]
    public byte Shared() => RoundTrip(_shared);

    [Benchmark(Description = "mimalloc, direct")]
    public byte MimallocDirect() => PeerRoundTrips.Native(_mi, Size);

    [Benchmark(Description = "mimalloc, ExternalNativeAllocator")]
    public byte MimallocAdaptor() => _miAdaptor is null ? (byte)0 : RoundTrip(_miAdaptor);

    [Benchmark(Description = "mimalloc, ExternalNativeAllocator, uncounted")]
    public byte MimallocUncounted() => _miUncounted is null ? (byte)0 : RoundTrip(_miUncounted);

    [Benchmark(Description = "jemalloc, direct")]
    public byte JemallocDirect() => PeerRoundTrips.Native(_je, Size);

    [Benchmark(Description = "jemalloc, ExternalNativeAllocator")]
    public byte JemallocAdaptor() => _jeAdaptor is null ? (byte)0 : RoundTrip(_jeAdaptor);

    [Benchmark(Description = "jemalloc, ExternalNativeAllocator, uncounted")]
    public byte JemallocUncounted() => _jeUncounted is null ? (byte)0 : RoundTrip(_jeUncounted);

    private byte RoundTrip(NativeMemoryAllocator allocator)
    {
        byte* p = allocator.Allocate((nuint)Size, Alignment);
        byte result = PeerRoundTrips.Touch(p, Size);
        allocator.Deallocate(p, (nuint)Size, Alignment);
        return result;
    }

    private byte RoundTrip(ExternalNativeAllocator allocator)
    {
        byte* p = allocator.Allocate((nuint)Size, Alignment);
        byte result = PeerRoundTrips.Touch(p, Size);
        allocator.Deallocate(p, (nuint)Size, Alignment);
        return result;
    }
}
