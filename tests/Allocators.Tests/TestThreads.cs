namespace AllocHosting.Allocators.Tests;

/// <summary>Threads a test starts to allocate or free on, and a wait for their heaps' finalisers after they exit.</summary>
internal static unsafe class TestThreads
{
    public static Exception? RunOnNewThread(Action action, bool catchException = false)
    {
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                action();
            }
            catch (Exception e)
            {
                error = e;
            }
        });
        thread.Start();
        thread.Join();
        if (error is not null && !catchException)
        {
            throw new InvalidOperationException("The thread failed.", error);
        }

        return error;
    }

    // Allocates blocks on a new thread that stays alive (so its heap is not abandoned) while
    // duringLife runs on this thread, then ends.
    public static nint[] AllocateOnLiveOwner(ThreadLocalAllocator allocator, int count, nuint size, Action<nint[]> duringLife)
    {
        var blocks = new nint[count];
        using var allocated = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var owner = new Thread(() =>
        {
            for (int i = 0; i < count; i++)
            {
                blocks[i] = (nint)allocator.Allocate(size, 16);
            }

            allocated.Set();
            release.Wait();
        });
        owner.Start();
        allocated.Wait();
        try
        {
            duringLife(blocks);
        }
        finally
        {
            release.Set();
            owner.Join();
        }

        return blocks;
    }

    public static void CollectUntil(Func<bool> condition)
    {
        for (int i = 0; i < 50 && !condition(); i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Thread.Sleep(10);
        }
    }
}
