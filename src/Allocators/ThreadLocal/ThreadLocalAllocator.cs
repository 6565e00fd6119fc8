using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
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
/// that allocated: a free always goes back to the heap that owns the block's address, whichever
/// thread makes it, so no thread ever takes over another's memory. One instance serves every thread, like
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
public sealed unsafe partial class ThreadLocalAllocator : AllocatorBase
{
    /// <summary>The alignment every slab block has without asking: 16 bytes.</summary>
    public const int MinimumAlignment = SlabSizeClasses.SmallestSize;

    /// <summary>The largest alignment served from slabs (4 KiB); larger alignments go to the fallback.</summary>
    public const int MaximumSlabAlignment = 4096;

    private readonly ThreadLocalAllocatorOptions _options;
    private readonly IAllocator _fallback;
    private readonly bool _ownsFallback;
    private readonly nuint _maximumSlabSize;
    private readonly nuint _segmentSize;
    private readonly nuint _stampKey;

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
    /// <remarks>The allocation fast path: the calling thread's heap (one thread-static load), its class's current page, a pop of that page's free list; everything else goes to the slow path.</remarks>
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
                return heap.Pop(page, block, size);
            }
        }

        return AllocateSlow(size, alignment);
    }

    /// <inheritdoc />
    /// <remarks>The free fast path: the page found by address in two loads, and a push on its free list when the calling thread owns it.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        nuint block = (nuint)pointer;
        SlabPage? page = FindPage(block, size);
        if (page is null)
        {
            DeallocateFallbackSlow(pointer, size, alignment);
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

        DeallocateNonLocalSlow(heap, page, block);
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

    // ---- Slow paths. ----

    private long RaisePeak(long bytesInUse) => AtomicAllocatorCounters.RaiseToAtLeast(ref _observedPeak, bytesInUse);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateSlow(nuint size, nuint alignment)
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

    private byte* AllocateSlab(int classIndex, nuint size) => CurrentHeap().AllocateSlow(classIndex, size);

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
    private void DeallocateFallbackSlow(byte* pointer, nuint size, nuint alignment)
    {
        ThrowIfDisposed();
        _fallback.Deallocate(pointer, size, alignment);
    }


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
