using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Benchmarks.Peers;
using BenchmarkDotNet.Attributes;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// <see cref="ThreadLocalAllocator"/> against the peers of performance.md: one allocation, a touch
/// of its first and last byte, and its free, at 64 B, 1 KiB, 16 KiB and 256 KiB (targets: ≤ jemalloc
/// at 64 B–1 KiB, ≤ ArrayPool.Shared at every size).
/// </summary>
[MemoryDiagnoser]
public unsafe class ThreadLocalBenchmarks
{
    private const nuint Alignment = 16;

    private ThreadLocalAllocator _threadLocal = null!;
    private NativePeers.Mimalloc? _mi;
    private NativePeers.Jemalloc? _je;

    [Params(64, 1024, 16 * 1024, 256 * 1024)]
    public int Size { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _threadLocal = new ThreadLocalAllocator();
        _mi = NativePeers.Mi;
        _je = NativePeers.Je;
    }

    [GlobalCleanup]
    public void Cleanup() => _threadLocal.Dispose();

    [Benchmark(Baseline = true, Description = "ArrayPool.Shared")]
    public byte ArrayPoolShared() => PeerRoundTrips.ArrayPoolShared(Size);

    [Benchmark(Description = "NativeMemory (glibc)")]
    public byte Glibc() => PeerRoundTrips.Glibc(Size);

    [Benchmark(Description = "mimalloc")]
    public byte Mimalloc() => PeerRoundTrips.Native(_mi, Size);

    [Benchmark(Description = "jemalloc")]
    public byte Jemalloc() => PeerRoundTrips.Native(_je, Size);

    [Benchmark(Description = "jemalloc, no GC transition")]
    public byte JemallocNoTransition() => PeerRoundTrips.NativeNoTransition(_je, Size);

    [Benchmark(Description = "ThreadLocalAllocator")]
    public byte ThreadLocal()
    {
        byte* p = _threadLocal.Allocate((nuint)Size, Alignment);
        byte result = PeerRoundTrips.Touch(p, Size);
        _threadLocal.Deallocate(p, (nuint)Size, Alignment);
        return result;
    }


}

/// <summary>
/// Scaling: each thread loops <see cref="PairsPerThread"/> alloc+touch+free pairs of 64 bytes, on
/// one thread and on two threads at once. Times are per pair (OperationsPerInvoke), so the
/// two-thread speed-up is the one-thread time divided by the two-thread time (target ≥ 1.8 for
/// <see cref="ThreadLocalAllocator"/>). The second thread is a long-lived worker released by an
/// event, so thread start-up is not measured.
/// </summary>
public unsafe class ThreadLocalScalingBenchmarks : IDisposable
{
    private const int PairsPerThread = 1_000_000;
    private const nuint Size = 64;
    private const nuint Alignment = 16;

    private ThreadLocalAllocator _threadLocal = null!;
    private SecondThread _second = null!;

    [GlobalSetup]
    public void Setup()
    {
        _threadLocal = new ThreadLocalAllocator();
        _second = new SecondThread();
    }

    [GlobalCleanup]
    public void Cleanup() => Dispose();

    public void Dispose()
    {
        _second?.Dispose();
        _threadLocal?.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = PairsPerThread, Description = "ThreadLocalAllocator, 1 thread")]
    public void ThreadLocalOneThread() => ThreadLocalLoop();

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "ThreadLocalAllocator, 2 threads")]
    public void ThreadLocalTwoThreads() => _second.RunWith(ThreadLocalLoop);

    [Benchmark(OperationsPerInvoke = PairsPerThread, Description = "ArrayPool.Shared, 1 thread")]
    public void ArrayPoolOneThread() => ArrayPoolLoop();

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "ArrayPool.Shared, 2 threads")]
    public void ArrayPoolTwoThreads() => _second.RunWith(ArrayPoolLoop);

    [Benchmark(OperationsPerInvoke = PairsPerThread, Description = "NativeMemory (glibc), 1 thread")]
    public void GlibcOneThread() => GlibcLoop();

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "NativeMemory (glibc), 2 threads")]
    public void GlibcTwoThreads() => _second.RunWith(GlibcLoop);

    [Benchmark(OperationsPerInvoke = PairsPerThread, Description = "NativeMemoryAllocator.Shared, 1 thread")]
    public void NativeAllocatorOneThread() => NativeAllocatorLoop();

    [Benchmark(OperationsPerInvoke = 2 * PairsPerThread, Description = "NativeMemoryAllocator.Shared, 2 threads")]
    public void NativeAllocatorTwoThreads() => _second.RunWith(NativeAllocatorLoop);

    // The switchable allocator's default global allocator: glibc behind validation and striped counters.
    // Not inlined, here and in the other loops: the one-thread method and the two threads then run the
    // same compiled loop (see NumaHeapScalingBenchmarks: inlined into a two-thread method through the
    // delegate, a loop can run out of the JIT's inlining budget in the calling thread's copy only).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void NativeAllocatorLoop()
    {
        NativeMemoryAllocator allocator = NativeMemoryAllocator.Shared;
        for (int i = 0; i < PairsPerThread; i++)
        {
            byte* p = allocator.Allocate(Size, Alignment);
            p[0] = 1;
            p[Size - 1] = 2;
            allocator.Deallocate(p, Size, Alignment);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThreadLocalLoop()
    {
        ThreadLocalAllocator allocator = _threadLocal;
        for (int i = 0; i < PairsPerThread; i++)
        {
            byte* p = allocator.Allocate(Size, Alignment);
            p[0] = 1;
            p[Size - 1] = 2;
            allocator.Deallocate(p, Size, Alignment);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ArrayPoolLoop()
    {
        for (int i = 0; i < PairsPerThread; i++)
        {
            byte[] array = ArrayPool<byte>.Shared.Rent((int)Size);
            array[0] = 1;
            array[Size - 1] = 2;
            ArrayPool<byte>.Shared.Return(array);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void GlibcLoop()
    {
        for (int i = 0; i < PairsPerThread; i++)
        {
            byte* p = (byte*)NativeMemory.Alloc(Size);
            p[0] = 1;
            p[Size - 1] = 2;
            NativeMemory.Free(p);
        }
    }
}

/// <summary>
/// Cross-thread frees: a producer allocates batches of <see cref="BatchSize"/> 64-byte blocks and a
/// consumer on another thread frees them (the async-continuation pattern), against one thread
/// allocating and freeing the same batches locally. Times are per block (target: cross-thread
/// ≤ 2× local for <see cref="ThreadLocalAllocator"/>). Batches circulate through two bounded
/// single-producer queues, so the hand-off is amortised over a batch. The consumer batches its
/// remote frees per page (one compare-and-swap per 32 blocks); the few it still holds when it exits
/// are pushed by a finaliser after the next garbage collection.
/// </summary>
public unsafe class ThreadLocalCrossThreadBenchmarks : IDisposable
{
    private const int BatchSize = 256;
    private const int Batches = 400;
    private const nuint Size = 64;
    private const nuint Alignment = 16;

    private ThreadLocalAllocator _threadLocal = null!;
    private readonly nint[] _local = new nint[BatchSize];

    [GlobalSetup]
    public void Setup() => _threadLocal = new ThreadLocalAllocator();

    [GlobalCleanup]
    public void Cleanup() => Dispose();

    public void Dispose() => _threadLocal?.Dispose();

    [Benchmark(Baseline = true, OperationsPerInvoke = BatchSize * Batches, Description = "ThreadLocalAllocator, local free")]
    public void LocalFree()
    {
        ThreadLocalAllocator allocator = _threadLocal;
        nint[] blocks = _local;
        for (int b = 0; b < Batches; b++)
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                byte* p = allocator.Allocate(Size, Alignment);
                p[0] = 1;
                blocks[i] = (nint)p;
            }

            for (int i = 0; i < blocks.Length; i++)
            {
                allocator.Deallocate((byte*)blocks[i], Size, Alignment);
            }
        }
    }

    [Benchmark(OperationsPerInvoke = BatchSize * Batches, Description = "ThreadLocalAllocator, freed by another thread")]
    public void CrossThreadFree() => ProducerConsumer(
        (allocator, blocks) =>
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                byte* p = allocator.Allocate(Size, Alignment);
                p[0] = 1;
                blocks[i] = (nint)p;
            }
        },
        (allocator, blocks) =>
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                allocator.Deallocate((byte*)blocks[i], Size, Alignment);
            }
        });

    [Benchmark(OperationsPerInvoke = BatchSize * Batches, Description = "NativeMemory (glibc), freed by another thread")]
    public void GlibcCrossThreadFree() => ProducerConsumer(
        (_, blocks) =>
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                byte* p = (byte*)NativeMemory.Alloc(Size);
                p[0] = 1;
                blocks[i] = (nint)p;
            }
        },
        (_, blocks) =>
        {
            for (int i = 0; i < blocks.Length; i++)
            {
                NativeMemory.Free((void*)blocks[i]);
            }
        });

    // The calling thread produces; a new consumer thread frees. Four batches circulate.
    private void ProducerConsumer(Action<ThreadLocalAllocator, nint[]> produce, Action<ThreadLocalAllocator, nint[]> consume)
    {
        using var full = new System.Collections.Concurrent.BlockingCollection<nint[]>(4);
        using var empty = new System.Collections.Concurrent.BlockingCollection<nint[]>(4);
        for (int i = 0; i < 4; i++)
        {
            empty.Add(new nint[BatchSize]);
        }

        ThreadLocalAllocator allocator = _threadLocal;
        var consumer = new Thread(() =>
        {
            foreach (nint[] batch in full.GetConsumingEnumerable())
            {
                consume(allocator, batch);
                empty.Add(batch);
            }
        });
        consumer.Start();
        for (int b = 0; b < Batches; b++)
        {
            nint[] batch = empty.Take();
            produce(allocator, batch);
            full.Add(batch);
        }

        full.CompleteAdding();
        consumer.Join();
    }
}
