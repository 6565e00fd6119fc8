using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// Blocks one thread freed into one page of another thread's heap, not yet pushed on the page's
/// remote list: consecutive remote frees into the same page are linked here with plain writes and
/// pushed with one compare-and-swap per batch instead of one per block. Referenced only from a
/// [ThreadStatic] field of <see cref="ThreadLocalAllocator"/>, so it is touched by its thread alone
/// and, after that thread died, by its finaliser alone.
/// </summary>
/// <remarks>
/// A batched block still counts as used by its page (<see cref="SlabPage.Used"/>), so neither its page
/// nor its heap (even an abandoned one) is released while a batch holds it. The batch is pushed
/// when it is full (<see cref="MaximumBlocks"/> blocks or <see cref="MaximumBytes"/>), when its
/// thread frees a block of another page, takes an allocation slow path or calls
/// <see cref="ThreadLocalAllocator.Collect"/>, and by the finaliser once its thread died; until
/// then the owner cannot reuse those blocks.
/// </remarks>
internal sealed unsafe class RemoteFreeBatch
{
    /// <summary>The most blocks a batch holds.</summary>
    public const int MaximumBlocks = 32;

    /// <summary>The most bytes a batch holds (it is pushed on reaching them): large blocks are pushed one or two at a time, where a compare-and-swap is small beside touching the block.</summary>
    public const nuint MaximumBytes = 32 * 1024;

    // Written on every remote free of its thread: padded like the page's owner fields, so that
    // the reads other threads make of objects the GC placed next to this one do not miss.
    private State _state;

    /// <summary>Blocks held now, not yet pushed (<see cref="ThreadLocalAllocator.PendingRemoteFrees"/>).</summary>
    public int Count => _state.Count;

    /// <summary>Adds a block of <paramref name="page"/> (its stamp written, its heap not abandoned when last checked), pushing the batch when it is full or held another page's blocks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(SlabPage page, nuint block)
    {
        if (page != _state.Page)
        {
            StartBatchSlow(page, block);
        }

        *(nuint*)block = _state.First;
        _state.First = block;
        if (++_state.Count >= page.RemoteBatchLimit)
        {
            Flush();
        }
    }

    /// <summary>Pushes the batch on its page's remote list (its thread only).</summary>
    public void Flush()
    {
        SlabPage? page = Take(out nuint first, out nuint last);

        // A heap released by Dispose took the blocks' memory with it (the allocator was in use
        // while disposed, which its contract forbids): there is nothing left to give back to.
        if (page is null || page.Heap!.ServingAllocator is null)
        {
            return;
        }

        page.PushRemote(first, last);
        CollectIfAbandoned(page.Heap);
    }

    ~RemoteFreeBatch()
    {
        try
        {
            FlushAfterThreadExit();
        }
#pragma warning disable CA1031 // An exception escaping a finaliser ends the process; the blocks then simply stay used.
        catch (Exception)
        {
        }
#pragma warning restore CA1031
    }

    // Called after a push. The push is a full fence (lock cmpxchg) that pairs with the exchange in
    // ThreadHeap.Abandon, a store-then-load on each side (Dekker): either the abandoning thread,
    // draining after setting its flag, sees the pushed blocks, or this thread, loading the flag
    // after its push, sees the flag and collects. A release/acquire pair would not order this
    // thread's store before its load.
    private static void CollectIfAbandoned(ThreadHeap heap)
    {
        if (heap.IsAbandoned)
        {
            heap.CollectAbandoned();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void StartBatchSlow(SlabPage page, nuint block)
    {
        Flush();
        _state.Page = page;
        _state.Last = block;
    }

    // Empties the batch: its page (null when it was empty) and its list from first to last.
    private SlabPage? Take(out nuint first, out nuint last)
    {
        SlabPage? page = _state.Page;
        (first, last) = (_state.First, _state.Last);
        _state.Page = null;
        _state.First = 0;
        _state.Last = 0;
        _state.Count = 0;
        return page;
    }

    // On the finaliser thread, after the batch's thread died: nothing else touches the batch, but
    // Dispose may release the heap concurrently, so the check and the push are made under its lock.
    private void FlushAfterThreadExit()
    {
        SlabPage? page = Take(out nuint first, out nuint last);
        if (page is null)
        {
            return;
        }

        ThreadHeap heap = page.Heap!;
        lock (heap.Lock)
        {
            if (heap.ServingAllocator is null)
            {
                return;
            }

            page.PushRemote(first, last);
        }

        CollectIfAbandoned(heap);
    }

    // Padded like CacheLinePadded<T>, but by an explicit layout: State holds a reference, and the
    // runtime keeps a sequential layout only for structs without references.
    [StructLayout(LayoutKind.Explicit, Size = 296)]
    private struct State
    {
        // The page every block of the batch belongs to; null when empty.
        [FieldOffset(128)]
        public SlabPage? Page;

        // The blocks, linked through their first words from First; Last's link is set by the push.
        [FieldOffset(136)]
        public nuint First;

        [FieldOffset(144)]
        public nuint Last;

        [FieldOffset(152)]
        public int Count;
    }
}
