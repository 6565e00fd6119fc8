using AllocHosting.Allocators.Benchmarks.Peers;
using BenchmarkDotNet.Attributes;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Issue 14: one allocation, a touch, and its free from a <see cref="PersistentHeap"/>, with and
/// without writing and flushing the block's bytes, on tmpfs (/dev/shm) and on the disk (the temporary
/// directory), against the process allocator. Every heap operation flushes its own block headers (two
/// or three ranges per allocation, one to three per free), so the rows are the cost of durability.
/// </summary>
[MemoryDiagnoser]
public unsafe class PersistentHeapBenchmarks
{
    private PersistentHeap _msync = null!;
    private PersistentHeap? _pmem2;
    private string _msyncPath = null!;
    private string _pmem2Path = null!;

    [Params("tmpfs", "disk")]
    public string Place { get; set; } = "tmpfs";

    [Params(64, 4096)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        string directory = Place == "tmpfs" ? "/dev/shm" : Path.GetTempPath();
        _msyncPath = Path.Combine(directory, $"pheap-bench-{Environment.ProcessId}-msync.heap");
        _pmem2Path = Path.Combine(directory, $"pheap-bench-{Environment.ProcessId}-pmem2.heap");
        File.Delete(_msyncPath);
        File.Delete(_pmem2Path);
        _msync = PersistentHeap.Create(_msyncPath, 4 << 20, useLibpmem2: false);
        _pmem2 = PersistentHeap.Create(_pmem2Path, 4 << 20);
        if (_pmem2.Source.FlushMethod != PersistentFlushMethod.Libpmem2)
        {
            // libpmem2 is not installed: the row would repeat the msync one.
            _pmem2.Dispose();
            _pmem2 = null;
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _msync.Dispose();
        _pmem2?.Dispose();
        File.Delete(_msyncPath);
        File.Delete(_pmem2Path);
    }

    [Benchmark(Baseline = true, Description = "NativeMemory (glibc)")]
    public byte Glibc() => PeerRoundTrips.Glibc(Size);

    [Benchmark(Description = "PersistentHeap alloc+free (msync)")]
    public byte AllocateFree()
    {
        long offset = _msync.AllocateOffset((nuint)Size);
        byte result = PeerRoundTrips.Touch(_msync.ToPointer(offset), Size);
        _msync.FreeOffset(offset, (nuint)Size);
        return result;
    }

    [Benchmark(Description = "PersistentHeap alloc+write+flush+free (msync)")]
    public byte AllocateWriteFlushFree() => WriteFlushRoundTrip(_msync);

    [Benchmark(Description = "PersistentHeap alloc+write+flush+free (libpmem2)")]
    public byte AllocateWriteFlushFreePmem2() => _pmem2 is null ? (byte)0 : WriteFlushRoundTrip(_pmem2);

    private byte WriteFlushRoundTrip(PersistentHeap heap)
    {
        long offset = heap.AllocateOffset((nuint)Size);
        byte* block = heap.ToPointer(offset);
        new Span<byte>(block, Size).Fill(7);
        heap.Flush(offset, (nuint)Size);
        byte result = PeerRoundTrips.Touch(block, Size);
        heap.FreeOffset(offset, (nuint)Size);
        return result;
    }
}
