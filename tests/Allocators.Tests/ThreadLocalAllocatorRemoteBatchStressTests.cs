using System.Collections.Concurrent;
using static AllocHosting.Allocators.Tests.SlabPageInspection;
using static AllocHosting.Allocators.Tests.TestThreads;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Batched remote frees under a bounded two-thread stress (issue 12 item 4): the owner allocates
/// while another thread frees what it allocated, so the owner keeps draining batches the freeing
/// thread pushes. No block may be handed out twice while live, none may be lost, and the batch the
/// freeing thread still holds when it exits is pushed after its death and reclaimed by the owner.
/// </summary>
public sealed unsafe class ThreadLocalAllocatorRemoteBatchStressTests
{
    private const int Blocks = 30_000;

    [Fact]
    public void Owner_reuses_remotely_freed_blocks_never_twice_and_loses_none_when_the_freeing_thread_exits_mid_batch()
    {
        using var allocator = new ThreadLocalAllocator();
        using var queue = new BlockingCollection<(nint Pointer, int Size)>(boundedCapacity: 512);
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(20));

        // An address is in `live` from just after the owner got it to just before the freeing thread
        // frees it, so a legitimate reuse always finds it absent and a block handed out twice finds it present.
        var live = new ConcurrentDictionary<nint, bool>();
        int handedOutTwice = 0, badContents = 0, pendingAtExit = -1;
        nint lastFreed = 0;
        using var ownerMayFinish = new ManualResetEventSlim();

        var owner = new Thread(() =>
        {
            try
            {
                var random = new Random(12);
                for (int i = 0; i < Blocks; i++)
                {
                    // The last block is of a class used by no other, so it starts a batch of its own
                    // that the freeing thread still holds when it exits.
                    int size = i == Blocks - 1 ? 3000 : random.Next(4) == 0 ? random.Next(129, 2049) : random.Next(16, 129);
                    byte* block = allocator.Allocate((nuint)size, 16);
                    if (!live.TryAdd((nint)block, true))
                    {
                        Interlocked.Increment(ref handedOutTwice);
                    }

                    new Span<byte>(block, size).Fill(Pattern((nint)block));
                    queue.Add(((nint)block, size), cancel.Token);
                }

                queue.CompleteAdding();

                // The owner stays alive (its heap not abandoned) until the freeing thread is gone and
                // its last batch pushed, then takes the remote lists back itself.
                ownerMayFinish.Wait(cancel.Token);
                allocator.Collect();
            }
            catch (OperationCanceledException)
            {
                // The time bound expired; the assertion below reports it.
            }
        });

        var freer = new Thread(() =>
        {
            try
            {
                foreach (var (pointer, size) in queue.GetConsumingEnumerable(cancel.Token))
                {
                    if (new ReadOnlySpan<byte>((void*)pointer, size).IndexOfAnyExcept(Pattern(pointer)) >= 0)
                    {
                        Interlocked.Increment(ref badContents);
                    }

                    live.TryRemove(pointer, out _);
                    allocator.Deallocate((byte*)pointer, (nuint)size, 16);
                    lastFreed = pointer;
                }
            }
            catch (OperationCanceledException)
            {
                // The time bound expired; the assertion below reports it.
            }

            // Exits holding a partial batch: no Collect here.
            pendingAtExit = ThreadLocalAllocator.PendingRemoteFrees;
        });

        owner.Start();
        freer.Start();
        freer.Join();
        Assert.False(cancel.IsCancellationRequested, "The stress did not finish within its time bound.");

        // The freeing thread's batch (its last block among them) is referenced only by its
        // [ThreadStatic] field: its finaliser pushes it. The owner is blocked, so its lists can be read.
        SlabPage page = PageOf((byte*)lastFreed)!;
        CollectUntil(() => FreeListsHold(page, (nuint)lastFreed));
        Assert.True(FreeListsHold(page, (nuint)lastFreed), "The exited thread's batch was never pushed.");
        ownerMayFinish.Set();
        owner.Join();

        Assert.Equal(0, handedOutTwice);
        Assert.Equal(0, badContents);
        Assert.Equal(1, pendingAtExit);
        Assert.Empty(live);

        AllocatorStatistics statistics = allocator.Statistics;
        Assert.Equal(Blocks, statistics.AllocationCount);
        Assert.Equal(Blocks, statistics.DeallocationCount);
        Assert.Equal(0, statistics.BytesInUse);
    }

    private static byte Pattern(nint pointer) => (byte)((pointer >> 4) ^ 0x5A);
}
