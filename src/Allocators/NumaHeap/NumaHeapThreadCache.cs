using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using static AllocHosting.Allocators.NumaHeapBlock;

namespace AllocHosting.Allocators;

/// <summary>
/// One thread's state in one <see cref="NumaHeapAllocator"/>: the heap it allocates from and, when
/// the allocator has thread caches, a small stack of freed blocks per size class of that heap, so
/// that an alloc+free of a small size takes no lock (jemalloc's tcache, in the NUMA heap's terms).
/// </summary>
/// <remarks>
/// <para>
/// What it holds: blocks of its <see cref="Heap"/> only, of block sizes up to <see cref="BlockLimit"/>
/// (requests of up to 4 KiB), by the heap's free-list classes (up to 1 KiB a class holds blocks of one
/// size; above, a quarter of a power of two, so a stacked block may be too small for a request of its
/// class, which then misses), at most 32 blocks or 4 KiB of blocks per class, whichever is fewer, but
/// at least 2, so about 270 KiB at the very most if a thread used every class. A cached block is, for its heap,
/// a block in use (<see cref="InUse"/> set, so no neighbour merges with it) with a zero stamp (so a
/// second free of it is refused, as for the heap's own cache); the heap never writes its stamp or
/// its bytes past the header, and the thread never writes its tag word, which the heap may change
/// (<see cref="PreviousInUse"/>) under its lock.
/// </para>
/// <para>
/// Refill and overflow: a class that misses is refilled with half its depth from the heap under one
/// lock (<see cref="NumaHeap.AllocateAndFill"/>), giving back first the blocks it held, too small for
/// the request; a full one gives its older half back under one lock
/// (<see cref="NumaHeap.ReturnFromThreadCache"/>). A thread whose heap changes (it migrated to another
/// node) gives every block back to the old heap first.
/// </para>
/// <para>
/// Collection: every <see cref="CollectionInterval"/> allocations the thread counts (those from its stacks), each class gives back
/// the blocks that stayed at the bottom of its stack since the last collection (its low-water mark,
/// as jemalloc's thread-cache collection does), so that a thread that stops using a size does not keep
/// its blocks of that size.
/// </para>
/// <para>
/// Threads: only <see cref="Thread"/> touches the stacks and the counters while it lives, with plain
/// writes; other threads read the counters (sums for statistics) and the counts (snapshots). Once
/// the thread has exited (or the allocator is disposed, when no thread may use it), the allocator
/// gives the blocks back from another thread (<see cref="ReturnAll"/>).
/// </para>
/// </remarks>
internal sealed class NumaHeapThreadCache
{
    /// <summary>The most blocks one class keeps.</summary>
    public const int MaximumDepth = 32;

    /// <summary>Allocations from the stacks between two collections of the blocks a thread no longer uses.</summary>
    public const int CollectionInterval = 4096;

    /// <summary>The largest block (header included) a thread caches: that of a 4 KiB request.</summary>
    public const nuint BlockLimit = 4096 + HeaderSize;

    /// <summary>The classes a thread caches: those of block sizes up to <see cref="BlockLimit"/>.</summary>
    public static readonly int ClassCount = ClassOf(BlockLimit) + 1;

    // Bytes of blocks one class keeps at most (unless that is fewer than two blocks).
    private const int ClassByteLimit = 4096;

    // Each class's depth.
    private static readonly int[] s_depths = new int[ClassCount];

    // Class c's stack is _blocks[c * MaximumDepth ..][.. _bins[c].Count], at most _bins[c].Depth deep.
    private readonly nuint[] _blocks;
    private readonly Bin[] _bins = new Bin[ClassCount];

    // Counts of the allocations and frees served here (plain writes by the owner; summed on read),
    // padded: the GC may place another thread's state next to this object.
    private CacheLinePadded<AllocatorCounters> _counters;

    static NumaHeapThreadCache()
    {
        // The smallest block of each class, from the class of every block size in 16-byte steps.
        var smallest = new int[ClassCount];
        for (nuint size = BlockLimit; size >= MinimumBlockSize; size -= HeaderSize)
        {
            smallest[ClassOf(size)] = (int)size;
        }

        for (int c = 0; c < ClassCount; c++)
        {
            s_depths[c] = Math.Clamp(ClassByteLimit / smallest[c], 2, MaximumDepth);
        }
    }

    /// <summary>A thread's state in <paramref name="owner"/>, allocating from <paramref name="heap"/>; <paramref name="caching"/> false keeps no blocks (the allocator's thread caches are off).</summary>
    public NumaHeapThreadCache(NumaHeapAllocator owner, Thread thread, NumaHeap heap, bool caching)
    {
        Owner = owner;
        Thread = thread;
        Heap = heap;
        _blocks = caching ? new nuint[ClassCount * MaximumDepth] : [];
        for (int c = 0; c < ClassCount; c++)
        {
            _bins[c].Depth = s_depths[c];
        }
    }

    /// <summary>The allocator this state belongs to.</summary>
    public NumaHeapAllocator Owner { get; }

    /// <summary>The thread this state belongs to.</summary>
    public Thread Thread { get; }

    /// <summary>The heap the thread allocates from, and whose blocks the stacks hold.</summary>
    public NumaHeap Heap { get; private set; }

    /// <summary>Allocations until a thread on a multi-node machine asks again which node it runs on.</summary>
    public int Countdown;

    /// <summary>Blocks held now (read by other threads: a snapshot).</summary>
    public int CachedBlockCount
    {
        get
        {
            int count = 0;
            for (int c = 0; c < _bins.Length; c++)
            {
                count += Volatile.Read(ref _bins[c].Count);
            }

            return count;
        }
    }

    /// <summary>The allocations and frees served here (read by other threads: each field as it is at that moment).</summary>
    public AllocatorCounters Counters => new()
    {
        BytesInUse = Volatile.Read(ref _counters.Value.BytesInUse),
        PeakBytesInUse = Volatile.Read(ref _counters.Value.PeakBytesInUse),
        AllocationCount = Volatile.Read(ref _counters.Value.AllocationCount),
        DeallocationCount = Volatile.Read(ref _counters.Value.DeallocationCount),
        TotalBytesAllocated = Volatile.Read(ref _counters.Value.TotalBytesAllocated),
    };

    /// <summary>The owner's pop: the most recently freed block of <paramref name="need"/>'s class if it holds <paramref name="need"/> bytes, or 0.</summary>
    /// <remarks>Unchecked indexing: <paramref name="need"/> is at most <see cref="BlockLimit"/>, so its class has a bin and a stack.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nuint TryPop(nuint need)
    {
        int c = ClassOf(need);
        ref Bin bin = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_bins), c);
        int count = bin.Count - 1;
        if (count < 0)
        {
            return 0;
        }

        nuint block = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_blocks), (c * MaximumDepth) + count);
        if (SizeOf(block) < need)
        {
            return 0;   // a smaller block of a quarter-power class
        }

        bin.Count = count;
        if (count < bin.LowWater)
        {
            bin.LowWater = count;
        }

        return block;
    }

    /// <summary>After <see cref="CountAllocated"/>: whether a collection is due (then call <see cref="Collect"/>), every <see cref="CollectionInterval"/> allocations the thread counted.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool CollectionDue() => (_counters.Value.AllocationCount & (CollectionInterval - 1)) == 0;

    /// <summary>
    /// The owner's collection: each class gives back, under one lock per class, the blocks below its
    /// low-water mark (never popped since the last collection), and the marks start again.
    /// </summary>
    public void Collect()
    {
        for (int c = 0; c < _bins.Length && _blocks.Length != 0; c++)
        {
            ref Bin bin = ref _bins[c];
            int unused = bin.LowWater;
            if (unused > 0)
            {
                Span<nuint> stack = _blocks.AsSpan(c * MaximumDepth, bin.Count);
                Heap.ReturnFromThreadCache(stack[..unused]);
                stack[unused..].CopyTo(stack);
                bin.Count -= unused;
            }

            bin.LowWater = bin.Count;
        }
    }

    /// <summary>The owner's push of a block of its heap (stamp already cleared) into its class; false when the class is full.</summary>
    /// <remarks>Unchecked indexing: <paramref name="c"/> is the class of a block of at most <see cref="BlockLimit"/> bytes.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryPush(nuint block, int c)
    {
        ref Bin bin = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_bins), c);
        int count = bin.Count;
        if (count == bin.Depth)
        {
            return false;
        }

        Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_blocks), (c * MaximumDepth) + count) = block;
        bin.Count = count + 1;
        return true;
    }

    /// <summary>Counts an allocation served by the thread (from the stacks or by a refill).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void CountAllocated(nuint requested, nuint usable) => _counters.Value.Allocated(requested, usable);

    /// <summary>Counts a free into the stacks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void CountFreed(nuint usable) => _counters.Value.Freed(usable);

    /// <summary>
    /// The owner's refill after <see cref="TryPop"/> missed for <paramref name="usable"/>: under one lock
    /// of the heap, the blocks the class held (too small) go back, a block is allocated for the caller
    /// (stamped and counted by the heap), and the class is refilled with up to half its depth.
    /// </summary>
    public nuint AllocateRefilling(nuint requested, nuint usable)
    {
        int c = ClassOf(usable + HeaderSize);
        Span<nuint> stack = _blocks.AsSpan(c * MaximumDepth, s_depths[c]);
        nuint pointer = Heap.AllocateAndFill(requested, usable, stack[.._bins[c].Count], stack[..(stack.Length / 2)], out int filled);
        _bins[c].Count = filled;
        _bins[c].LowWater = filled;
        return pointer;
    }

    /// <summary>The owner's push when class <paramref name="c"/> is full: its older half goes back to the heap under one lock, then the block is pushed.</summary>
    public void PushOverflowing(nuint block, int c)
    {
        int depth = s_depths[c];
        int half = depth / 2;
        Span<nuint> stack = _blocks.AsSpan(c * MaximumDepth, depth);
        Heap.ReturnFromThreadCache(stack[..half]);
        stack[half..].CopyTo(stack);
        _bins[c].Count = depth - half;
        _bins[c].LowWater = Math.Max(0, _bins[c].LowWater - half);   // the bottom half went back
        TryPush(block, c);
    }

    /// <summary>Gives every block back to the heap (the owner, or any thread once the owner has exited).</summary>
    public void ReturnAll()
    {
        for (int c = 0; c < _bins.Length && _blocks.Length != 0; c++)
        {
            int count = _bins[c].Count;
            if (count != 0)
            {
                Heap.ReturnFromThreadCache(_blocks.AsSpan(c * MaximumDepth, count));
                _bins[c].Count = 0;
            }

            _bins[c].LowWater = 0;
        }
    }

    /// <summary>The owner moves to <paramref name="heap"/>: every block goes back to the old heap first, and the counts so far are handed to it (they were its blocks).</summary>
    public void MoveTo(NumaHeap heap)
    {
        if (heap != Heap)
        {
            Retire();
            Heap = heap;
        }
    }

    /// <summary>Gives the blocks and the counts so far back to the heap: the owner moving on, or any thread once the owner has exited (after the allocator's Dispose the stacks are already empty, see <see cref="Forget"/>).</summary>
    public void Retire()
    {
        ReturnAll();
        Heap.AddCounters(Counters);
        _counters.Value = default;
    }

    /// <summary>After the allocator's heaps were released: forgets the blocks (their memory is gone).</summary>
    public void Forget()
    {
        for (int c = 0; c < _bins.Length; c++)
        {
            _bins[c].Count = 0;
            _bins[c].LowWater = 0;
        }
    }

    // A class's stack: how many blocks it holds now, at most, and the fewest since the last collection.
    private struct Bin
    {
        public int Count;
        public int Depth;
        public int LowWater;
    }
}
