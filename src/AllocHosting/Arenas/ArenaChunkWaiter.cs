using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// One rent waiting, asynchronously, in the FIFO queue of an <see cref="ArenaChunkBudget"/> for a
/// pool chunk (<see cref="LargeSize"/> 0) or a large chunk of <see cref="LargeSize"/> bytes. Its task
/// completes with the chunk the budget handed to it, with <see langword="null"/> when the wait timed
/// out or the budget was disposed, or as canceled when one of its tokens was.
/// </summary>
/// <remarks>
/// Threads: the waiter is completed only by whoever removes it from the queue, under the budget's
/// lock (a return that serves it, its timeout, its cancellation, the budget's disposal), so it is
/// completed exactly once; continuations run asynchronously, never inside that lock.
/// <see cref="Arm"/> and <see cref="Disarm"/> run on the waiting rent's own flow, one after the other.
/// </remarks>
internal sealed class ArenaChunkWaiter : TaskCompletionSource<ArenaChunk?>
{
    private readonly ArenaChunkBudget _budget;
    private ITimer? _timer;
    private CancellationTokenRegistration _first;
    private CancellationTokenRegistration _second;

    public ArenaChunkWaiter(ArenaChunkBudget budget, long largeSize)
        : base(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        _budget = budget;
        LargeSize = largeSize;
    }

    /// <summary>0 for a pool chunk, else the bytes of the large chunk wanted.</summary>
    public long LargeSize { get; }

    /// <summary>The waiter's place in the budget's queue; null once it left it. Under the budget's lock.</summary>
    public LinkedListNode<ArenaChunkWaiter>? Node { get; set; }

    /// <summary>
    /// After the waiter joined the queue: starts its timeout and registers its tokens (either one
    /// cancels the wait). A callback that fires at once (a token already canceled) abandons the wait
    /// before this returns.
    /// </summary>
    public void Arm(TimeSpan timeout, CancellationToken first, CancellationToken second)
    {
        _timer = TimeProvider.System.CreateTimer(static state => ((ArenaChunkWaiter)state!).TimedOut(), this, timeout, Timeout.InfiniteTimeSpan);
        if (first.CanBeCanceled)
        {
            _first = first.UnsafeRegister(static (state, token) => ((ArenaChunkWaiter)state!).Canceled(token), this);
        }

        if (second.CanBeCanceled && second != first)
        {
            _second = second.UnsafeRegister(static (state, token) => ((ArenaChunkWaiter)state!).Canceled(token), this);
        }
    }

    /// <summary>Once the task completed: stops the timer and unregisters the tokens (neither waits for a callback running elsewhere, which then finds the waiter gone).</summary>
    public void Disarm()
    {
        _timer?.Dispose();
        _first.Unregister();
        _second.Unregister();
    }

    private void TimedOut() => _budget.Abandon(this, canceledBy: null);

    private void Canceled(CancellationToken token) => _budget.Abandon(this, token);
}
