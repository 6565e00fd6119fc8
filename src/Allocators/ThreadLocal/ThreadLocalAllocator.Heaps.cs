using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

// The heaps: which heap serves the calling thread, how it is created on the thread's first
// allocation, and the allocator-wide list of live heaps that statistics and diagnostics read.
//
// Threading: the [ThreadStatic] fields are the calling thread's own. _heaps and the released
// counters are shared, and read or written only under _heapsLock (a heap's creation, its release,
// every read of statistics or diagnostics); no fast path takes that lock.
public sealed unsafe partial class ThreadLocalAllocator
{
    // The heap this thread used last (its ServingAllocator says for which allocator); a cache of t_lifetimes.
    [ThreadStatic]
    private static ThreadHeap? t_heap;

    // Every heap this thread created, one per allocator; the only strong references to the lifetimes.
    [ThreadStatic]
    private static List<HeapLifetime>? t_lifetimes;

    // Live heaps and the counters of released ones, under _heapsLock.
    private readonly Lock _heapsLock = new();
    private readonly List<ThreadHeap> _heaps = [];
    private long _releasedAllocations;
    private long _releasedBytesAllocated;

    /// <summary>Heaps alive now: one per thread that allocated, until the heap is released after its thread exits.</summary>
    public int HeapCount
    {
        get
        {
            lock (_heapsLock)
            {
                return _heaps.Count;
            }
        }
    }

    /// <summary>Bytes of segments mapped by all heaps (address space; the fallback's blocks are not included). Approximate while threads run.</summary>
    public long MappedBytes
    {
        get
        {
            long sum = 0;
            lock (_heapsLock)
            {
                foreach (ThreadHeap heap in _heaps)
                {
                    sum += Volatile.Read(ref heap.MappedBytes);
                }
            }

            return sum;
        }
    }

    /// <summary>
    /// Heaps whose thread exited while they still held live blocks: each keeps its segments mapped
    /// until the last of those blocks is freed (from any thread). A count that stays above zero
    /// points at blocks a finished thread allocated and nobody freed. Approximate while threads run.
    /// </summary>
    public int AbandonedHeapCount
    {
        get
        {
            lock (_heapsLock)
            {
                return _heaps.Count(static heap => heap.IsAbandoned);
            }
        }
    }

    /// <summary>Bytes of segments mapped, by the NUMA node they are attributed to (-1: no single node). Approximate while threads run.</summary>
    public IReadOnlyDictionary<int, long> GetMappedBytesByNode()
    {
        var byNode = new Dictionary<int, long>();
        lock (_heapsLock)
        {
            foreach (ThreadHeap heap in _heaps)
            {
                byNode[heap.Node] = byNode.GetValueOrDefault(heap.Node) + Volatile.Read(ref heap.MappedBytes);
            }
        }

        return byNode;
    }

    /// <summary>
    /// What the calling thread's heap of this allocator is placed on and holds, or null when the
    /// thread has not allocated from this allocator yet: to check that a thread's memory comes from
    /// the NUMA policy and memory source intended for it.
    /// </summary>
    public ThreadHeapSnapshot? GetCurrentThreadHeapSnapshot()
    {
        ThreadHeap? heap = FindCurrentHeap();
        return heap is null ? null : new ThreadHeapSnapshot(heap.Policy, heap.Source is MemoryMapSource, heap.SegmentCount, heap.MappedBytes);
    }

    /// <summary>The calling thread's heap of this allocator, or null when it has none (it has not allocated from this allocator yet).</summary>
    internal ThreadHeap? FindCurrentHeap()
    {
        ThreadHeap? heap = t_heap;
        if (heap is not null && heap.ServingAllocator == this)
        {
            return heap;
        }

        List<HeapLifetime>? lifetimes = t_lifetimes;
        if (lifetimes is null)
        {
            return null;
        }

        foreach (HeapLifetime lifetime in lifetimes)
        {
            if (lifetime.Heap.ServingAllocator == this)
            {
                t_heap = lifetime.Heap;
                return lifetime.Heap;
            }
        }

        return null;
    }

    /// <summary>Called by a heap, under its lock, when it has released its segments.</summary>
    internal void OnHeapReleased(ThreadHeap heap)
    {
        lock (_heapsLock)
        {
            if (_heaps.Remove(heap))
            {
                // A released heap has no block in use (blocks left at disposal are gone with it).
                _releasedAllocations += heap.AllocationCount;
                _releasedBytesAllocated += heap.TotalBytesAllocated;
            }
        }
    }

    private ThreadHeap CurrentHeap() => FindCurrentHeap() ?? CreateHeapSlow();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ThreadHeap CreateHeapSlow()
    {
        NumaPolicy policy = _options.NumaPolicy ?? _options.NumaPolicySelector?.Invoke() ?? NumaTopology.Current.ForCurrentThread();
        IMemorySource source = _options.UseMemoryMap && MemoryMapSource.IsSupported
            ? new MemoryMapSource(WithPolicy(_options.MemoryMap ?? MemoryMapSourceOptions.Default, policy))
            : new NativeMemorySource(_segmentSize);
        var heap = new ThreadHeap(this, policy, source, _segmentSize, _options.MaximumSegmentsPerHeap, _stampKey);
        lock (_heapsLock)
        {
            ThrowIfDisposed();
            _heaps.Add(heap);
        }

        List<HeapLifetime> lifetimes = t_lifetimes ??= [];
        lifetimes.RemoveAll(static l => l.Heap.ServingAllocator is null);
        lifetimes.Add(new HeapLifetime(heap));
        t_heap = heap;
        return heap;
    }

    // Every other option is the template's (a record: an option added later is carried too).
    private static MemoryMapSourceOptions WithPolicy(MemoryMapSourceOptions template, NumaPolicy policy) =>
        template with { NumaPolicy = policy };
}
