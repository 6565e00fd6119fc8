using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

// The remote-free path: a block freed by a thread that does not own its heap. Its owner may be
// this thread under another cache entry, a dead thread (the heap is abandoned: freed under the
// heap's lock), or a live thread (batched per page in this thread's RemoteFreeBatch and pushed
// on the page's remote list with one compare-and-swap per batch).
//
// Threading: t_remoteBatch is the calling thread's own (and, after that thread died, its
// finaliser's); the pushes it makes are lock-free and may race with the owner's drain.
public sealed unsafe partial class ThreadLocalAllocator
{
    // Blocks this thread freed into another thread's page and has not pushed yet (any allocator).
    [ThreadStatic]
    private static RemoteFreeBatch? t_remoteBatch;

    /// <summary>
    /// Blocks the calling thread freed into pages of other threads' heaps (of any thread-local
    /// allocator) and holds back, not yet handed to their owners, which cannot reuse them until
    /// then. At most 32 blocks (at most 32 KiB), all of one page;
    /// <see cref="Collect"/> and the thread's next allocation slow path hand them over.
    /// </summary>
    public static int PendingRemoteFrees => t_remoteBatch?.Count ?? 0;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void DeallocateNonLocalSlow(ThreadHeap heap, SlabPage page, nuint block)
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
}
