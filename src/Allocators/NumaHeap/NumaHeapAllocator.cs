using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using AllocHosting.Allocators.Interop;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// A thread-safe, NUMA-aware general-purpose allocator after DPDK's <c>rte_malloc</c>: heaps of
/// variable-size blocks, each heap bound to one NUMA node and guarded by a spin lock, a thread
/// allocating from a heap of the node it runs on and a free going back to the block's own heap
/// from any thread. Every member may be called from any thread.
/// </summary>
/// <remarks>
/// <para>
/// <b>What it is for.</b> The global allocator of a process on a multi-socket machine: blocks of
/// any size from 1 byte up, allocated and freed by any thread, each placed on the node of the thread
/// that allocated it. It is the seed's "DPDK allocator" investigation (several address-sorted free
/// lists per heap, a walk that skips blocks too small and splits blocks too large, a spin lock per
/// heap), and the global allocator a <see cref="SwitchableAllocator"/> can be given
/// (<c>GlobalAllocatorKind.NumaHeap</c> in AllocHosting).
/// </para>
/// <para>
/// <b>How.</b> For each node of the topology there are <see cref="NumaHeapAllocatorOptions.HeapsPerNode"/>
/// heaps; each maps segments (4 MiB, aligned to their size) from a <see cref="MemoryMapSource"/> bound
/// to its node and carves them into blocks with boundary tags (a header before each block, a footer at
/// the end of each free one), so that a free merges the block with its free neighbours at once. Free
/// blocks wait on size-segregated, doubly linked lists kept sorted by address (first fit, lowest
/// address first); recently freed blocks of up to 64 KiB wait, unmerged, in a small per-size cache,
/// so that an alloc+free of one size costs a pop, a push and the lock. In front of that, each thread
/// keeps small stacks of freed blocks of its own heap for requests of up to 4 KiB
/// (<see cref="NumaHeapAllocatorOptions.ThreadCaches"/>), so that an alloc+free of those takes no
/// lock at all; the heap's lock is taken once per refill or overflow of half a stack. A thread is given one heap of
/// its node (round-robin among that node's heaps, so that threads on a node rarely share a lock),
/// and checks its node again every 1024 allocations in case it migrated. A free finds the block's
/// heap through a radix map of segments (never reading a foreign pointer) and takes that heap's
/// lock, whichever thread frees. Requests above <see cref="NumaHeapAllocatorOptions.MaximumHeapBlockSize"/>
/// (1 MiB) or aligned above <see cref="MaximumHeapAlignment"/> get a mapping of their own on the
/// calling thread's node.
/// </para>
/// <example><code>
/// NumaHeapAllocator allocator = NumaHeapAllocator.Shared;
/// byte* buffer = allocator.Allocate(1000, 16);            // from a heap on this thread's node
/// buffer = allocator.GrowingReallocate(buffer, 1000, 1500, 16); // in place when the next block is free
/// allocator.Deallocate(buffer, 1500, 16);                 // from any thread: back to its own heap
/// </code></example>
/// <para>
/// <b>Sizes.</b> A heap block's usable size is the request rounded up to 16 bytes (at least 32);
/// a mapped block's is the request rounded up to the page size. Growing in place succeeds when the
/// block already has room or the block after it is free and large enough; shrinking in place always
/// succeeds (the tail is freed when it can hold a block). A heap at
/// <see cref="NumaHeapAllocatorOptions.MaximumSegmentsPerHeap"/> lets its thread's request fall to the
/// node's other heaps, then to other nodes' (DPDK's "any socket"), and then fails it.
/// </para>
/// <para>
/// <b>Checks.</b> A free, reallocation or resize of a pointer that is not the start of a live block
/// (foreign, inside a block, already freed) throws <see cref="ArgumentException"/> and changes
/// nothing: the pointer must lie in one of this allocator's segments (or be one of its mapped
/// blocks), and the header before it must carry the stamp a live block gets, a keyed hash of its
/// address that a freed block loses (so a double free is refused, unless it races the first free on
/// another thread of the same heap, see <see cref="NumaHeapAllocatorOptions.ThreadCaches"/>; a pointer
/// into a block would have to hold the stamp by chance, one in 2^32). So is a size whose usable size is not the
/// block's (sizes that round to the same usable size name the same block); the alignment is not
/// recorded, as <see cref="IAllocator"/> allows.
/// </para>
/// <para>
/// <b>Never.</b> It never hands a block of one heap to a free list of another, never releases a
/// segment holding a live block, and never returns memory to the kernel except in
/// <see cref="Trim"/> (empty segments) and for mapped blocks on free. <see cref="AllocatorBase.Dispose()"/>
/// unmaps everything and must only be called when no thread uses the allocator. Statistics are
/// summed over the heaps, each read under its lock: exact when no thread runs.
/// </para>
/// </remarks>
public sealed unsafe partial class NumaHeapAllocator : AllocatorBase
{
    /// <summary>The largest alignment the heaps serve (4 KiB); larger alignments get a mapping of their own.</summary>
    public const int MaximumHeapAlignment = 4096;

    /// <summary>Allocations after which a thread on a multi-node machine asks again which node it runs on.</summary>
    public const int NodeRecheckInterval = 1024;

    private static readonly Lazy<NumaHeapAllocator> s_shared = new(() => new NumaHeapAllocator());

    private readonly NumaHeapAllocatorOptions _options;
    private readonly NumaTopology _topology;
    private readonly bool _multiNode;
    private readonly NumaHeap[] _heaps;
    private readonly int _heapsPerNode;
    private readonly Dictionary<int, int> _nodeIndex = [];
    private readonly NumaHeapSegmentMap _map;
    private readonly nuint _segmentSize;
    private readonly nuint _maximumHeapRequest;
    private readonly nuint _pageSize = (nuint)Environment.SystemPageSize;
    private readonly ulong _key;
    private readonly bool _threadCaches;

    /// <summary>Creates an allocator with <paramref name="options"/> (or <see cref="NumaHeapAllocatorOptions.Default"/>); no memory is mapped until the first allocation.</summary>
    /// <exception cref="ArgumentException">The options are invalid (the message names the setting).</exception>
    public NumaHeapAllocator(NumaHeapAllocatorOptions? options = null)
        : this(options, kernel: null)
    {
    }

    /// <summary>Creates an allocator whose memory sources make their system calls through <paramref name="kernel"/> (the seam through which tests fake a NUMA machine).</summary>
    internal NumaHeapAllocator(NumaHeapAllocatorOptions? options, ILinuxSystemCalls? kernel)
    {
        options ??= NumaHeapAllocatorOptions.Default;
        options.Validate();
        _options = options;
        _topology = options.Topology ?? NumaTopology.Current;
        _multiNode = _topology.IsMultiNode;
        _segmentSize = (nuint)options.SegmentSize;
        _maximumHeapRequest = (nuint)options.MaximumHeapBlockSize;
        _map = new NumaHeapSegmentMap(_segmentSize);
        ulong key = BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(sizeof(ulong)));
        _key = key;
        _threadCaches = options.ThreadCaches;
        IReadOnlyList<NumaNode> nodes = _topology.Nodes;
        _heapsPerNode = options.HeapsPerNode > 0
            ? options.HeapsPerNode
            : Math.Clamp(nodes.Max(static n => n.Cpus.Count), 1, 8);
        _heaps = new NumaHeap[nodes.Count * _heapsPerNode];
        for (int n = 0; n < nodes.Count; n++)
        {
            _nodeIndex[nodes[n].Id] = n;
            NumaPolicy policy = _multiNode ? NumaPolicy.Bind(NumaNodeSet.Of(nodes[n].Id)) : NumaPolicy.Default;
            for (int s = 0; s < _heapsPerNode; s++)
            {
                int index = (n * _heapsPerNode) + s;
                _heaps[index] = new NumaHeap(nodes[n].Id, index, policy, CreateSource(policy, kernel), _map, _segmentSize, options.MaximumSegmentsPerHeap, key);
            }
        }
    }

    /// <summary>A process-wide instance with the default options; never disposed.</summary>
    public static NumaHeapAllocator Shared => s_shared.Value;

    /// <summary>The options the allocator was built with.</summary>
    public NumaHeapAllocatorOptions Options => _options;

    /// <summary>The topology the heaps were built for.</summary>
    public NumaTopology Topology => _topology;

    /// <summary>The number of heaps: nodes times <see cref="NumaHeapAllocatorOptions.HeapsPerNode"/>.</summary>
    public int HeapCount => _heaps.Length;

    /// <summary>Bytes mapped now: the heaps' segments plus the mapped blocks (approximate while threads run).</summary>
    public long MappedBytes
    {
        get
        {
            long sum = OverSizeMappedBytes;
            foreach (NumaHeap heap in _heaps)
            {
                sum += heap.MappedBytes;
            }

            return sum;
        }
    }

    /// <inheritdoc />
    /// <remarks>The heaps' counters (each read under its lock), the threads' (see <see cref="NumaHeapAllocatorOptions.ThreadCaches"/>) and the mapped blocks'; no capacity, since heaps grow.</remarks>
    public override AllocatorStatistics Statistics
    {
        get
        {
            AllocatorCounters sum = OverSizeCounters();
            sum.Add(StateCounters());
            foreach (NumaHeap heap in _heaps)
            {
                sum.Add(heap.ReadCounters());
            }

            // Each part's peak came at its own time: their sum bounds the whole's from above.
            return sum.ToStatistics(capacity: null, FailureCount);
        }
    }

    /// <summary>A snapshot of every heap, in index order (node by node).</summary>
    public IReadOnlyList<NumaHeapSnapshot> GetHeaps() => [.. _heaps.Select(SnapshotOf)];

    /// <summary>The heap whose segment holds <paramref name="pointer"/>, or null (a mapped block, or not this allocator's memory).</summary>
    public NumaHeapSnapshot? GetHeapOf(byte* pointer) => _map.Find((nuint)pointer) is { } heap ? SnapshotOf(heap) : null;

    /// <summary>The heap the calling thread allocates from now.</summary>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public NumaHeapSnapshot GetCurrentThreadHeap()
    {
        ThrowIfDisposed();
        return SnapshotOf(CurrentHeap());
    }

    /// <summary>
    /// Gives the calling thread's cached blocks and those of exited threads back to their heaps, merges
    /// every heap's cached blocks and unmaps the segments that hold no live block. Blocks cached by
    /// other live threads stay with them (see <see cref="NumaHeapAllocatorOptions.ThreadCaches"/>), and
    /// so do the segments that hold them.
    /// </summary>
    /// <returns>The bytes unmapped.</returns>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public long Trim()
    {
        ThrowIfDisposed();
        ReturnCachedBlocks();
        long released = 0;
        foreach (NumaHeap heap in _heaps)
        {
            released += heap.Trim();
        }

        return released;
    }

    /// <summary>Gives the calling thread's cached blocks back and merges every heap's cached blocks into its free lists (tests: to see merging at once).</summary>
    internal void Flush()
    {
        ReturnCachedBlocks();
        foreach (NumaHeap heap in _heaps)
        {
            heap.Flush();
        }
    }

    /// <summary>Checks every heap's invariants (tiling, boundary tags, merged neighbours, sorted lists); what is wrong, or null.</summary>
    internal string? Validate()
    {
        foreach (NumaHeap heap in _heaps)
        {
            if (heap.Validate() is { } failure)
            {
                return $"heap {heap.Index} (node {heap.Node}): {failure}";
            }
        }

        return null;
    }

    /// <inheritdoc />
    /// <remarks>True for addresses in a segment of one of the heaps or in a mapped block.</remarks>
    public override bool Owns(byte* pointer) => _map.Find((nuint)pointer) is not null || OwnsMappedBlock(pointer);

    /// <inheritdoc />
    /// <remarks>The fast path: the thread's state (one thread-static load) and, up to 4 KiB, a pop from its stack; otherwise its heap's lock, a cached block or a first-fit walk.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        if (size <= _maximumHeapRequest && alignment <= MaximumHeapAlignment)
        {
            nuint usable = NumaHeapBlock.UsableSizeOf(size);
            if (usable < NumaHeapThreadCache.BlockLimit && alignment <= NumaHeapBlock.HeaderSize && _threadCaches)
            {
                return AllocateCached(size, usable);
            }

            NumaHeap heap = CurrentHeap();
            nuint pointer = heap.Allocate(size, usable, alignment);
            return pointer != 0 ? (byte*)pointer : AllocateElsewhereSlow(heap, size, alignment);
        }

        return AllocateMappedSlow(size, alignment);
    }

    /// <inheritdoc />
    /// <remarks>The fast path: the segment map names the heap; a small block of the calling thread's own heap is checked and pushed on its stack, any other is checked and freed under its heap's lock.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        NumaHeap? heap = HeapOf(pointer);
        if (heap is null)
        {
            DeallocateMappedSlow(pointer, size);
            return;
        }

        nuint block = (nuint)pointer - NumaHeapBlock.HeaderSize;
        if (_threadCaches && TryFreeCached(heap, block, size))
        {
            return;
        }

        heap.Lock.Enter();
        int check = heap.CheckLive(block, size);
        if (check != 0)
        {
            heap.Lock.Exit();
            ThrowBadBlock(check, pointer, size);
        }

        heap.FreeLocked(block);
        heap.Lock.Exit();
    }

    /// <inheritdoc />
    /// <remarks>A heap block grows within its block or into the free block after it; a mapped block grows when the kernel can extend its mapping.</remarks>
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        NumaHeap? heap = HeapOf(pointer);
        if (heap is null)
        {
            return TryResizeMappedSlow(pointer, currentSize, newSize);
        }

        nuint block = (nuint)pointer - NumaHeapBlock.HeaderSize;
        heap.Lock.Enter();
        int check = heap.CheckLive(block, currentSize);
        if (check != 0)
        {
            heap.Lock.Exit();
            ThrowBadBlock(check, pointer, currentSize);
        }

        bool grown = newSize <= _maximumHeapRequest && heap.TryGrowLocked(block, NumaHeapBlock.UsableSizeOf(newSize));
        heap.Lock.Exit();
        return grown;
    }

    /// <inheritdoc />
    /// <remarks>A heap block always shrinks in place; a mapped block moves into a heap when the new size belongs there, else its mapping shrinks.</remarks>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        NumaHeap? heap = HeapOf(pointer);
        if (heap is null)
        {
            CheckMappedSlow(pointer, currentSize);
            return (newSize > _maximumHeapRequest || alignment > MaximumHeapAlignment) && TryResizeMappedSlow(pointer, currentSize, newSize);
        }

        nuint block = (nuint)pointer - NumaHeapBlock.HeaderSize;
        heap.Lock.Enter();
        int check = heap.CheckLive(block, currentSize);
        if (check != 0)
        {
            heap.Lock.Exit();
            ThrowBadBlock(check, pointer, currentSize);
        }

        heap.ShrinkLocked(block, NumaHeapBlock.UsableSizeOf(newSize));
        heap.Lock.Exit();
        return true;
    }

    /// <summary>The request rounded up to 16 bytes (at least 32) for the heaps; to the page size for a mapped block.</summary>
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment) =>
        size <= _maximumHeapRequest && alignment <= MaximumHeapAlignment ? NumaHeapBlock.UsableSizeOf(size) : Allocator.AlignUp(size, _pageSize);

    /// <summary>Unmaps every segment and mapped block; every block handed out becomes invalid.</summary>
    protected override void Dispose(bool disposing)
    {
        foreach (NumaHeap heap in _heaps)
        {
            heap.Release();
        }

        ForgetCachedBlocks();
        ReleaseMappedBlocks();
        base.Dispose(disposing);
    }

    // The heap whose segment holds a pointer that can be a block start there (16-aligned, past the
    // segment's unused head); null for anything else, which the mapped-block path then checks.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private NumaHeap? HeapOf(byte* pointer)
    {
        nuint offset = (nuint)pointer & (_segmentSize - 1);
        if ((offset & (NumaHeapBlock.HeaderSize - 1)) != 0 || offset < NumaHeap.FirstBlockOffset + NumaHeapBlock.HeaderSize)
        {
            return null;
        }

        return _map.Find((nuint)pointer);
    }

    // The thread's heap could not map a segment: the node's other heaps, then the other nodes'.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateElsewhereSlow(NumaHeap tried, nuint size, nuint alignment)
    {
        if (IsDisposed)
        {
            return null;
        }

        nuint usable = NumaHeapBlock.UsableSizeOf(size);
        int first = tried.Index - (tried.Index % _heapsPerNode);
        for (int i = 0; i < _heaps.Length; i++)
        {
            NumaHeap heap = _heaps[(first + i) % _heaps.Length];
            if (heap != tried && heap.Allocate(size, usable, alignment) is var pointer && pointer != 0)
            {
                return (byte*)pointer;
            }
        }

        return null;
    }

    private IMemorySource CreateSource(NumaPolicy policy, ILinuxSystemCalls? kernel)
    {
        if (!MemoryMapSource.IsSupported)
        {
            return new NativeMemorySource(_pageSize);
        }

        MemoryMapSourceOptions options = (_options.MemoryMap ?? MemoryMapSourceOptions.Default) with { NumaPolicy = policy };
        return kernel is null ? new MemoryMapSource(options) : new MemoryMapSource(options, kernel);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadBlock(int check, byte* pointer, nuint size)
    {
        if (check == 1)
        {
            Allocator.ThrowNotLive(Name, pointer);
        }

        throw new ArgumentException(
            $"The size {size} does not name the block at 0x{(nuint)pointer:X} of this {Name}: pass the size it was allocated or last resized with (or one with the same usable size, {nameof(GetUsableSize)}).",
            nameof(size));
    }
}
