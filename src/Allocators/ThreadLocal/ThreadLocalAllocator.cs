using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// A general-purpose allocator that serves each OS thread from that thread's own heap of size-class
/// slabs, placed on the thread's NUMA node: no locks and no atomics when a thread frees what it
/// allocated, a lock-free hand-off when another thread frees it. Every member may be called from any thread.
/// </summary>
/// <remarks>
/// <para>
/// What it is for: many threads allocating and freeing small and medium buffers (16 B to 256 KiB)
/// at high rates, including async code whose continuations free on another thread than the one
/// that allocated (architecture decision 4). One instance serves every thread, like
/// <see cref="System.Buffers.ArrayPool{T}.Shared"/>; <see cref="Shared"/> is a process-wide one.
/// </para>
/// <para>
/// How: a thread's first allocation creates its heap, whose memory source applies the NUMA policy
/// of that thread (<see cref="ThreadLocalAllocatorOptions.NumaPolicy"/>). A heap maps segments
/// (4 MiB, aligned to their size), cuts them into pages of one or more 64 KiB units, and gives each
/// page to one size class (16-byte steps to 128 B, then four classes per power of two up to 256 KiB: a block's usable
/// size is its class size, at most 25 % above the request). The allocation fast path pops the
/// class's current page's free list; the free fast path finds the page in O(1) through a radix
/// table of pages (so a foreign pointer is rejected, not dereferenced) and pushes the block on
/// that list. Blocks freed by another thread are batched by that thread per page and pushed on the
/// page's remote list with one compare-and-swap per batch; the owner takes such lists whole when a
/// page runs dry, or in <see cref="Collect"/>. Each thread's hot fields have cache lines of their
/// own, so threads do not slow each other down.
/// The data layout and ownership rules are described at the top of ThreadHeap.cs.
/// </para>
/// <para>
/// Requests above <see cref="ThreadLocalAllocatorOptions.MaximumSlabSize"/>, with alignments above
/// <see cref="MaximumSlabAlignment"/>, or made when a heap cannot obtain a segment go to the fallback
/// allocator (a <see cref="MemoryMapAllocator"/> by default, the seed's "over-size fallback"), and
/// frees, growth and shrinking of those blocks are routed back to it by address. Growing or
/// shrinking moves blocks between slabs and the fallback as their size requires. Segments are
/// registered in the process-wide owner registry with this allocator as owner, and the default
/// fallback registers its own blocks, so a router that only knows an address
/// (<see cref="SwitchableAllocator"/>) finds the owner; see <see cref="ThreadLocalAllocatorOptions.Fallback"/>
/// for what a <see cref="SwitchableAllocator"/> requires of other fallbacks.
/// </para>
/// <para>
/// When a thread exits its heap is abandoned (detected by the finaliser of an object only that
/// thread's <see cref="ThreadStaticAttribute"/> state references, so after the next garbage
/// collection): blocks still live may be freed from any thread, and once none is left the heap's
/// segments are unmapped. The seed leaked the whole region instead (W-SW4).
/// </para>
/// <example><code>
/// ThreadLocalAllocator allocator = ThreadLocalAllocator.Shared;
/// byte* buffer = allocator.Allocate(1024, 16);                 // from this thread's heap
/// buffer[0] = 42;
/// nint address = (nint)buffer;
/// var other = new Thread(() => allocator.Deallocate((byte*)address, 1024, 16)); // routed back, lock-free
/// other.Start();
/// other.Join();
/// </code></example>
/// <para>
/// What it never does: it never returns a block to another heap than the one it came from, never
/// dereferences a pointer before finding it in its own page table (a pointer that is neither a slab
/// block nor a block of the fallback throws <see cref="ArgumentException"/>; the default fallback
/// tracks its blocks), never locks or uses atomics when a thread frees its own memory, and never
/// writes allocator-wide state on its fast paths.
/// </para>
/// <para>
/// Limits: a double free is detected when the block was not reallocated in between (a stamp in the
/// free block), except when two threads free the same block at the same moment. Memory freed by
/// other threads is reused, and counted in <see cref="Statistics"/>, only once the freeing thread
/// has pushed it and the owning thread drains it (its next allocation that needs it, or
/// <see cref="Collect"/>), so statistics are approximate while threads run. A thread holds back at
/// most 32 blocks (at most 32 KiB) it freed into one page of another thread's heap until it frees
/// into another page, takes an allocation slow path, calls <see cref="Collect"/> or exits (its
/// batch is then pushed after the next garbage collection); until then those blocks, and an
/// abandoned heap they lie in, stay in use. Empty pages are returned to their segment under pressure or in
/// <see cref="Collect"/>; segments are unmapped by <see cref="Collect"/>, when an abandoned heap empties,
/// and by <see cref="AllocatorBase.Dispose()"/>, which invalidates every block and must only be called
/// when no thread uses the allocator. An abandoned heap that still holds live blocks keeps its
/// segments (and is not adopted by other threads).
/// </para>
/// </remarks>
public sealed unsafe class ThreadLocalAllocator : AllocatorBase
{
    /// <summary>The alignment every slab block has without asking: 16 bytes.</summary>
    public const int MinimumAlignment = SlabSizeClasses.SmallestSize;

    /// <summary>The largest alignment served from slabs (4 KiB); larger alignments go to the fallback.</summary>
    public const int MaximumSlabAlignment = 4096;

    // The heap this thread used last (its ServingAllocator says for which allocator); a cache of t_lifetimes.
    [ThreadStatic]
    private static ThreadHeap? t_heap;

    // Every heap this thread created, one per allocator; the only strong references to the lifetimes.
    [ThreadStatic]
    private static List<HeapLifetime>? t_lifetimes;

    // Blocks this thread freed into another thread's page and has not pushed yet (any allocator).
    [ThreadStatic]
    private static RemoteFreeBatch? t_remoteBatch;

    private readonly ThreadLocalAllocatorOptions _options;
    private readonly IAllocator _fallback;
    private readonly bool _ownsFallback;
    private readonly nuint _maximumSlabSize;
    private readonly nuint _segmentSize;
    private readonly nuint _stampKey;

    // Live heaps and the counters of released ones, under _heapsLock.
    private readonly Lock _heapsLock = new();
    private readonly List<ThreadHeap> _heaps = [];
    private long _releasedAllocations;
    private long _releasedBytesAllocated;

    // The largest bytes-in-use seen by a statistics read (Interlocked).
    private long _observedPeak;
    private int _disposed;

    /// <summary>Creates an allocator with <paramref name="options"/> (or <see cref="ThreadLocalAllocatorOptions.Default"/>).</summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public ThreadLocalAllocator(ThreadLocalAllocatorOptions? options = null)
    {
        options ??= ThreadLocalAllocatorOptions.Default;
        options.Validate();
        _options = options;
        _segmentSize = (nuint)options.SegmentSize;
        int largestClass = SlabSizeClasses.IndexOf((nuint)options.MaximumSlabSize);
        _maximumSlabSize = (nuint)SlabSizeClasses.SizeOf(largestClass);
        _stampKey = (nuint)BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(sizeof(ulong))) | 1;
        if (options.Fallback is not null)
        {
            _fallback = options.Fallback;
        }
        else
        {
            _ownsFallback = true;
            _fallback = MemoryMapAllocator.IsSupported
                ? new MemoryMapAllocator(new MemoryMapSource(options.MemoryMap), registerBlocks: true)   // routed for free: see MemoryMapAllocator
                : new NativeMemoryAllocator(trackOwnership: true);
        }
    }

    /// <summary>A process-wide instance with the default options; never disposed.</summary>
    public static ThreadLocalAllocator Shared => SharedInstance.Value;

    /// <summary>The allocator serving requests the slabs do not take.</summary>
    public IAllocator Fallback => _fallback;

    /// <summary>The largest request served from slabs: <see cref="ThreadLocalAllocatorOptions.MaximumSlabSize"/> rounded up to its size class.</summary>
    public nuint MaximumSlabSize => _maximumSlabSize;

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

    /// <inheritdoc />
    /// <remarks>
    /// The sum over every heap (including released ones) plus the fallback's statistics. Each heap's
    /// counters are written by its thread without synchronisation and blocks freed by other threads are
    /// counted when pushed by the freeing thread and drained by the owner, so while threads run the
    /// figures are approximate; once every thread that freed has called <see cref="Collect"/> (or
    /// exited) and then every owner has called it (or abandoned heaps are released) they are exact.
    /// To keep the fast path to three counter updates, the slabs' peak is sampled: it is the largest
    /// bytes-in-use figure any read of this property has seen (plus the fallback's own peak).
    /// </remarks>
    public override AllocatorStatistics Statistics
    {
        get
        {
            long allocations, requested, bytesInUse = 0, blocksInUse = 0;
            lock (_heapsLock)
            {
                allocations = _releasedAllocations;
                requested = _releasedBytesAllocated;
                foreach (ThreadHeap heap in _heaps)
                {
                    allocations += Volatile.Read(ref heap.AllocationCount);
                    requested += Volatile.Read(ref heap.TotalBytesAllocated);
                    (long bytes, long blocks) = heap.CountInUse();
                    bytesInUse += bytes;
                    blocksInUse += blocks;
                }
            }

            long peak = RaisePeak(bytesInUse);
            // The slab counters plus the fallback's, except its failures: this allocator's own
            // failure count covers the requests it refused. No capacity: the slab side is unbounded.
            var slab = new AllocatorStatistics(bytesInUse, peak, Capacity: null, allocations, allocations - blocksInUse, FailureCount, requested);
            return slab + (_fallback.Statistics with { FailureCount = 0 });
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
    /// Pushes the blocks the calling thread freed into other threads' heaps and has not handed back
    /// yet, then, on the calling thread's heap (if it has one), takes every block other threads
    /// freed, gives empty pages back to their segments and unmaps empty segments. Other threads'
    /// heaps are untouched.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public void Collect()
    {
        ThrowIfDisposed();
        t_remoteBatch?.Flush();
        FindCurrentHeap()?.Collect();
    }

    /// <inheritdoc />
    /// <remarks>True for addresses in a page of one of this allocator's heaps, or owned by the fallback.</remarks>
    public override bool Owns(byte* pointer)
    {
        SlabPage? page = SlabPageMap.Find((nuint)pointer);
        return page is not null ? page.Allocator == this : _fallback.Owns(pointer);
    }

    // ---- Fast paths. ----

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        ThreadHeap? heap = t_heap;
        if (heap is not null && heap.ServingAllocator == this && size <= _maximumSlabSize && alignment <= MinimumAlignment)
        {
            SlabPage page = heap.Current[SlabSizeClasses.IndexOf(size)];
            nuint block = page.Free;
            if (block != 0)
            {
                page.Free = *(nuint*)block;
                ((nuint*)block)[1] = 0;
                page.Used++;
                heap.AllocationCount++;
                heap.TotalBytesAllocated += (long)size;
                return (byte*)block;
            }
        }

        return AllocateGeneric(size, alignment);
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        nuint block = (nuint)pointer;
        SlabPage? page = FindPage(block, size);
        if (page is null)
        {
            DeallocateFallback(pointer, size, alignment);
            return;
        }

        FreeSlabBlock(page, block);
    }

    /// <summary>
    /// <see cref="AllocatorBase.DeallocatePrevalidated"/> for a caller in this assembly that already
    /// found the block's page through <see cref="SlabPageMap.Find"/> and checked that
    /// <paramref name="page"/> belongs to this allocator: the page-map lookup is not repeated.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="pointer"/> is not the start of a block of <paramref name="page"/>, <paramref name="size"/> exceeds the block, or the block is already free.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void DeallocateInPage(SlabPage page, byte* pointer, nuint size)
    {
        Debug.Assert(page.Allocator == this, "The page belongs to another allocator.");
        nuint block = (nuint)pointer;
        if (!page.IsBlockStart(block) || size > page.BlockSize)
        {
            ThrowNotSlabBlock(page, block, size);
        }

        FreeSlabBlock(page, block);
    }

    // Frees a block of one of this allocator's slab pages (checked by the caller).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FreeSlabBlock(SlabPage page, nuint block)
    {
        byte* pointer = (byte*)block;
        nuint stamp = _stampKey ^ block;
        if (((nuint*)block)[1] == stamp)
        {
            Allocator.ThrowDoubleFree(Name, pointer);
        }

        ((nuint*)block)[1] = stamp;
        ThreadHeap heap = page.Heap!;
        if (heap == t_heap)
        {
            heap.FreeLocal(page, block);
            return;
        }

        DeallocateNonLocal(heap, page, block);
    }

    // ---- Resizing. ----

    /// <inheritdoc />
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment)
    {
        int classIndex = SlabClassOf(size, alignment);
        return classIndex >= 0 ? (nuint)SlabSizeClasses.SizeOf(classIndex) : _fallback.GetUsableSize(size, alignment);
    }

    /// <inheritdoc />
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        SlabPage? page = FindPage((nuint)pointer, currentSize);
        if (page is not null)
        {
            return newSize <= page.BlockSize;
        }

        return _fallback.TryGrowInPlace(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    /// <remarks>A slab block keeps its page when shrunk in place; <see cref="AllocatorBase.ShrinkingReallocate"/> moves it to a smaller class when that at least halves it.</remarks>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (FindPage((nuint)pointer, currentSize) is not null)
        {
            return true;
        }

        return _fallback.TryShrinkInPlace(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        SlabPage? page = FindPage((nuint)pointer, currentSize);
        if (page is not null)
        {
            return newSize <= page.BlockSize ? pointer : MoveBlock(pointer, currentSize, newSize, alignment);
        }

        // A fallback block stays there (mremap moves pages, not bytes).
        return _fallback.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out byte* moved) ? moved : null;
    }

    /// <inheritdoc />
    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        SlabPage? page = FindPage((nuint)pointer, currentSize);
        int classIndex = SlabClassOf(newSize, alignment);
        if (page is not null)
        {
            if (classIndex < 0 || (nuint)SlabSizeClasses.SizeOf(classIndex) * 2 > page.BlockSize)
            {
                return pointer;
            }

            // Best effort: when no smaller block can be had the block simply stays where it is.
            byte* smaller = AllocateSlab(classIndex, newSize);
            return smaller is null ? pointer : Move(pointer, smaller, newSize, currentSize, alignment);
        }

        if (classIndex >= 0)
        {
            byte* slab = AllocateSlab(classIndex, newSize);
            if (slab is not null)
            {
                return Move(pointer, slab, newSize, currentSize, alignment);
            }
        }

        return _fallback.ShrinkingReallocate(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        ThreadHeap[] heaps;
        lock (_heapsLock)
        {
            heaps = [.. _heaps];
        }

        foreach (ThreadHeap heap in heaps)
        {
            heap.ReleaseAll();
        }

        if (_ownsFallback && _fallback is IDisposable disposable)
        {
            disposable.Dispose();
        }

        base.Dispose(disposing);
    }

    // ---- Internal hooks. ----

    /// <summary>The calling thread's heap of this allocator, or null when it has none (tests).</summary>
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

    /// <summary>The calling thread's batch of remote frees, or null when it never freed into another heap (tests).</summary>
    internal static RemoteFreeBatch? CurrentRemoteBatch => t_remoteBatch;

    /// <summary>The live heaps (tests).</summary>
    internal ThreadHeap[] FindHeapsForTesting()
    {
        lock (_heapsLock)
        {
            return [.. _heaps];
        }
    }

    /// <summary>The page of a slab block (tests).</summary>
    internal static SlabPage? PageOf(byte* pointer) => SlabPageMap.Find((nuint)pointer);

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

    // ---- Slow paths. ----

    private long RaisePeak(long bytesInUse) => AtomicAllocatorCounters.RaiseToAtLeast(ref _observedPeak, bytesInUse);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateGeneric(nuint size, nuint alignment)
    {
        ThrowIfDisposed();

        // A cheap moment to hand back what this thread freed into other heaps.
        t_remoteBatch?.Flush();
        int classIndex = SlabClassOf(size, alignment);
        if (classIndex < 0)
        {
            return AllocateFallback(size, alignment);
        }

        byte* block = AllocateSlab(classIndex, size);

        // An exhausted heap: the fallback takes the class size, so the usable size promised holds.
        return block is not null ? block : AllocateFallback((nuint)SlabSizeClasses.SizeOf(classIndex), alignment);
    }

    private byte* AllocateSlab(int classIndex, nuint size) => CurrentHeap().Allocate(classIndex, size);

    private byte* AllocateFallback(nuint size, nuint alignment)
    {
        return _fallback.TryAllocate(size, alignment, out byte* block) ? block : null;
    }

    // The slab class serving (size, alignment), or -1 when the request goes to the fallback.
    private int SlabClassOf(nuint size, nuint alignment)
    {
        if (size > _maximumSlabSize || alignment > MaximumSlabAlignment)
        {
            return -1;
        }

        int classIndex = alignment <= MinimumAlignment ? SlabSizeClasses.IndexOf(size) : SlabSizeClasses.IndexOf(size, alignment);
        return classIndex < SlabSizeClasses.Count && (nuint)SlabSizeClasses.SizeOf(classIndex) <= _maximumSlabSize ? classIndex : -1;
    }

    private ThreadHeap CurrentHeap() => FindCurrentHeap() ?? CreateHeap();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ThreadHeap CreateHeap()
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

    // The page of a slab block of this allocator; null for anything else, which then belongs to
    // the fallback. Throws for blocks of another thread-local allocator and for addresses inside
    // our pages that are not a block's start or whose size exceeds the block.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private SlabPage? FindPage(nuint address, nuint size)
    {
        SlabPage? page = SlabPageMap.Find(address);
        if (page is not null && (page.Allocator != this || !page.IsBlockStart(address) || size > page.BlockSize))
        {
            ThrowNotSlabBlock(page, address, size);
        }

        return page;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void DeallocateNonLocal(ThreadHeap heap, SlabPage page, nuint block)
    {
        if (FindCurrentHeap() == heap)
        {
            heap.FreeLocal(page, block);
        }
        else if (heap.IsAbandoned)
        {
            heap.FreeAbandoned(page, block);
        }
        else
        {
            // Batched: consecutive frees into one page cost one compare-and-swap per batch. The
            // flush re-checks the abandoned flag after its push (see RemoteFreeBatch).
            (t_remoteBatch ??= new RemoteFreeBatch()).Add(page, block);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void DeallocateFallback(byte* pointer, nuint size, nuint alignment)
    {
        ThrowIfDisposed();
        _fallback.Deallocate(pointer, size, alignment);
    }

    private byte* Move(byte* from, byte* to, nuint newSize, nuint currentSize, nuint alignment)
    {
        NativeMemory.Copy(from, to, Math.Min(newSize, currentSize));
        DeallocateCore(from, currentSize, alignment);
        return to;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotSlabBlock(SlabPage page, nuint pointer, nuint size)
    {
        nuint address = pointer;
        if (page.Allocator != this)
        {
            Allocator.ThrowNotOwned(Name, (void*)address);
        }

        if (!page.IsBlockStart(address))
        {
            throw new ArgumentException(
                $"0x{address:X} lies in this {Name}'s memory but is not the start of a block (an interior pointer, or a block whose page was already freed).",
                nameof(pointer));
        }

        throw new ArgumentException(
            $"The block at 0x{address:X} holds {page.BlockSize} bytes in this {Name}, fewer than the size {size} given for it.",
            nameof(pointer));
    }

    // Created on first use, so that allocators built with their own options do not map anything for it.
    private static class SharedInstance
    {
        public static readonly ThreadLocalAllocator Value = new();
    }
}
