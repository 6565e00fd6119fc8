using System.Runtime.CompilerServices;
using static AllocHosting.Allocators.NumaHeapBlock;

namespace AllocHosting.Allocators;

// Each thread's state in the allocator (NumaHeapThreadCache): the heap it allocates from, and, with
// NumaHeapAllocatorOptions.ThreadCaches, its stacks of freed small blocks, found through one
// thread-static load; and the list of every thread's state, for the statistics, snapshots, Trim and
// the blocks of threads that exited.
//
// Threading: a thread's state is written by that thread only (t_state); the list is changed and
// read under _statesLock, which no fast path takes.
public sealed unsafe partial class NumaHeapAllocator
{
    // Heaps are given out to threads round-robin by this counter (one value per thread, for life).
    private static int s_nextStripe;

    [ThreadStatic]
    private static NumaHeapThreadCache? t_state;

    [ThreadStatic]
    private static int t_stripe;

    private readonly Lock _statesLock = new();
    private readonly List<NumaHeapThreadCache> _states = [];

    // The calling thread's state here, for its allocations (which count down to the next node check).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private NumaHeapThreadCache CurrentState()
    {
        NumaHeapThreadCache? state = t_state;
        if (state is not null && ReferenceEquals(state.Owner, this) && (!_multiNode || --state.Countdown > 0))
        {
            return state;
        }

        return SelectStateSlow();
    }

    private NumaHeap CurrentHeap() => CurrentState().Heap;

    // The thread's first allocation here, another allocator used in between, or time to ask again
    // for the node: the thread's state here (found in the list, or created), on the heap of its
    // stripe (fixed for life) among the heaps of the node it runs on now.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private NumaHeapThreadCache SelectStateSlow()
    {
        int stripe = t_stripe;
        if (stripe == 0)
        {
            stripe = (Interlocked.Increment(ref s_nextStripe) & int.MaxValue) + 1;
            t_stripe = stripe;
        }

        int nodeIndex = 0;
        if (_multiNode && _topology.TryGetCurrentNode(out int node) && _nodeIndex.TryGetValue(node, out int index))
        {
            nodeIndex = index;
        }

        NumaHeap heap = _heaps[(nodeIndex * _heapsPerNode) + ((stripe - 1) % _heapsPerNode)];
        NumaHeapThreadCache? state = t_state;
        if (state is null || !ReferenceEquals(state.Owner, this))
        {
            state = FindOrCreateState(heap);
            t_state = state;
        }

        state.MoveTo(heap);
        state.Countdown = NodeRecheckInterval;
        return state;
    }

    // Under _statesLock: the calling thread's state here, or a new one registered; the states of
    // threads that exited give their blocks and their counts back to their heaps.
    private NumaHeapThreadCache FindOrCreateState(NumaHeap heap)
    {
        Thread current = Thread.CurrentThread;
        lock (_statesLock)
        {
            foreach (NumaHeapThreadCache existing in _states)
            {
                if (existing.Thread == current)
                {
                    return existing;
                }
            }

            ReturnExitedStatesLocked();
            var state = new NumaHeapThreadCache(this, current, heap, _options.ThreadCaches);
            _states.Add(state);
            return state;
        }
    }

    // Under _statesLock: the states of exited threads are dropped, their blocks and counts handed to
    // their heaps (the counts stay with the heap whose blocks they counted, so a heap's snapshot
    // still adds up when another thread frees those blocks).
    private void ReturnExitedStatesLocked()
    {
        for (int i = _states.Count - 1; i >= 0; i--)
        {
            NumaHeapThreadCache state = _states[i];
            if (!state.Thread.IsAlive)
            {
                state.Retire();   // after Dispose its stacks are empty (Forget): only the counts move
                _states.RemoveAt(i);
            }
        }
    }

    // The calling thread's blocks (if it has a state here) and those of exited threads go back to their heaps.
    private void ReturnCachedBlocks()
    {
        lock (_statesLock)
        {
            ReturnExitedStatesLocked();
        }

        if (t_state is { } mine && ReferenceEquals(mine.Owner, this))
        {
            mine.ReturnAll();
        }
    }

    // The counts of every thread state (each read as it is at that moment); the states of exited
    // threads give their blocks back first (so a server that reads its statistics, as the metrics do,
    // gets them back even when no new thread starts using the allocator).
    private AllocatorCounters StateCounters()
    {
        lock (_statesLock)
        {
            ReturnExitedStatesLocked();
            AllocatorCounters sum = default;
            foreach (NumaHeapThreadCache state in _states)
            {
                sum.Add(state.Counters);
            }

            return sum;
        }
    }

    // A heap's snapshot with the bytes in use and the blocks of the thread states on it.
    private NumaHeapSnapshot SnapshotOf(NumaHeap heap)
    {
        long bytes = 0;
        int cached = 0;
        lock (_statesLock)
        {
            foreach (NumaHeapThreadCache state in _states)
            {
                if (state.Heap == heap)
                {
                    bytes += state.Counters.BytesInUse;
                    cached += state.CachedBlockCount;
                }
            }
        }

        return heap.Snapshot(bytes, cached);
    }

    // At Dispose, once the heaps are released: no state may hand out a block of them any more.
    private void ForgetCachedBlocks()
    {
        lock (_statesLock)
        {
            foreach (NumaHeapThreadCache state in _states)
            {
                state.Forget();
            }
        }
    }

    // A small allocation from the thread's stacks: no lock; on an empty class, a refill under one.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* AllocateCached(nuint size, nuint usable)
    {
        NumaHeapThreadCache state = CurrentState();
        nuint block = state.TryPop(usable + HeaderSize);
        if (block == 0)
        {
            return AllocateRefillingSlow(state, size, usable);
        }

        Stamp(block) = MakeStamp(block, usable, _key);
        state.CountAllocated(size, usable);
        if (state.CollectionDue())
        {
            CollectSlow(state);
        }

        return (byte*)(block + HeaderSize);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void CollectSlow(NumaHeapThreadCache state) => state.Collect();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateRefillingSlow(NumaHeapThreadCache state, nuint size, nuint usable)
    {
        nuint pointer = state.AllocateRefilling(size, usable);
        return pointer != 0 ? (byte*)pointer : AllocateElsewhereSlow(state.Heap, size, HeaderSize);
    }

    // A free of a small block of the calling thread's own heap onto its stacks, after the checks the
    // locked free makes (read without the lock: the block is the caller's, and the heap changes only
    // its tag's previous-in-use flag meanwhile); false when the block is not for the stacks.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryFreeCached(NumaHeap heap, nuint block, nuint size)
    {
        // The size first, before the thread-static load, so that a large block pays nothing here
        // (what a foreign pointer holds there is refused by the check below).
        nuint blockSize = SizeOf(block);
        if (blockSize > NumaHeapThreadCache.BlockLimit)
        {
            return false;
        }

        // The heap is this allocator's, so a state on it is this allocator's too.
        NumaHeapThreadCache? state = t_state;
        if (state is null || state.Heap != heap)
        {
            return false;
        }

        int check = heap.CheckLive(block, size);
        if (check != 0)
        {
            ThrowBadBlock(check, (byte*)(block + HeaderSize), size);
        }

        state.CountFreed(UsableOf(Stamp(block)));
        Stamp(block) = 0;
        int c = ClassOf(blockSize);
        if (!state.TryPush(block, c))
        {
            PushOverflowingSlow(state, block, c);
        }

        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void PushOverflowingSlow(NumaHeapThreadCache state, nuint block, int c) => state.PushOverflowing(block, c);
}
