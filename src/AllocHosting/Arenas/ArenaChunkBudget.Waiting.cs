using System.Runtime.CompilerServices;
using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// The asynchronous admission of the budget: under <see cref="ArenaBudgetPolicy.Wait"/>, a rent of
/// an async API that finds the budget spent joins a FIFO queue of waiters instead of being refused,
/// and no thread blocks while it waits.
/// </summary>
/// <remarks>
/// <para>
/// The queue holds at most <see cref="SwitchableAllocatorOptions.BudgetQueueLimit"/> waiters (a rent
/// beyond it is refused at once); a waiter not served within
/// <see cref="SwitchableAllocatorOptions.BudgetWaitTimeout"/> is refused; a canceled one (its token or
/// the request's <c>RequestAborted</c>) leaves the queue and holds nothing.
/// </para>
/// <para>
/// Order: every path that makes room (<see cref="Return"/>, <see cref="ReturnLarge"/>, the idle stack
/// and the hot slots settling) serves the queue from its head first, under the lock, handing the
/// chunk to the waiter itself; while anyone waits, a synchronous rent that misses its hot slot is
/// refused rather than served, so a newcomer never overtakes a waiter. The rule for a waiter of a
/// large chunk at the head is strict FIFO: the memory that comes back while it does not fit yet is
/// kept for it (idle chunks are disposed to make room for its chunk as soon as enough came back), so a
/// stream of small rents cannot starve it; the waiters behind it wait until it is served, which is
/// bounded by the time the requests holding its size take to end and never longer than its own wait
/// timeout, after which it is refused and the next waiter is served at once.
/// </para>
/// </remarks>
internal sealed partial class ArenaChunkBudget
{
    // The waiting rents, oldest first; under _lock. _waiters mirrors its count for readers without the lock.
    private readonly LinkedList<ArenaChunkWaiter> _waiting = new();

    /// <summary>Rents waiting for a chunk now: the figure of <c>allochosting.request_arena.waiting</c>.</summary>
    public int Waiting => Volatile.Read(ref _waiters);

    /// <summary>
    /// A pool chunk (<paramref name="largeSize"/> 0) or a large chunk of <paramref name="largeSize"/> bytes
    /// if one is to be had at once and no rent waits; null otherwise, counting nothing.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The budget was disposed.</exception>
    public ArenaChunk? TryTakeNow(int slot, long largeSize)
    {
        if (largeSize == 0 && Volatile.Read(ref _waiters) == 0 && _hotChunks.Take(slot) is { } hot)
        {
            return hot;
        }

        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, typeof(RequestArenaPool));
            return _waiting.Count == 0 ? TryTakeChunk(largeSize) : null;
        }
    }

    /// <summary>
    /// As <see cref="Take"/>, but under the policy Wait a spent budget queues the rent and the task
    /// completes when a chunk comes back for it; null when refused (policy Reject, queue full, wait
    /// timed out, budget disposed).
    /// </summary>
    /// <exception cref="OperationCanceledException">A token was canceled while the rent waited.</exception>
    /// <exception cref="ObjectDisposedException">The budget was disposed.</exception>
    public ValueTask<ArenaChunk?> TakeAsync(int slot, CancellationToken first, CancellationToken second) =>
        Volatile.Read(ref _waiters) == 0 && _hotChunks.Take(slot) is { } hot ? new(hot) : TakeOrQueueSlow(0, first, second);

    /// <summary>As <see cref="TakeLarge"/> for a large chunk of <paramref name="chunkSize"/> bytes (<see cref="LargeChunkSizeFor"/>), waiting as <see cref="TakeAsync"/> does.</summary>
    /// <exception cref="OperationCanceledException">A token was canceled while the rent waited.</exception>
    /// <exception cref="ObjectDisposedException">The budget was disposed.</exception>
    public ValueTask<ArenaChunk?> TakeLargeAsync(long chunkSize, CancellationToken first, CancellationToken second) =>
        TakeOrQueueSlow(chunkSize, first, second);

    /// <summary>Leaves the queue, if the waiter is still in it: refused (timeout) or canceled by <paramref name="canceledBy"/>.</summary>
    internal void Abandon(ArenaChunkWaiter waiter, CancellationToken? canceledBy)
    {
        lock (_lock)
        {
            if (waiter.Node is not { } node)
            {
                return;   // served, or abandoned by its other callback, first
            }

            bool wasHead = _waiting.First == node;
            Dequeue(waiter);
            if (canceledBy is { } token)
            {
                waiter.TrySetCanceled(token);
            }
            else
            {
                waiter.TrySetResult(null);
            }

            if (wasHead)
            {
                // The memory kept for it may serve the next ones.
                ServeWaiters();
            }
        }

        if (canceledBy is null)
        {
            CountRefusal();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private ValueTask<ArenaChunk?> TakeOrQueueSlow(long largeSize, CancellationToken first, CancellationToken second)
    {
        if (first.IsCancellationRequested || second.IsCancellationRequested)
        {
            return ValueTask.FromCanceled<ArenaChunk?>(first.IsCancellationRequested ? first : second);
        }

        ArenaChunkWaiter? waiter = null;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, typeof(RequestArenaPool));

            // Counted before the last look: a Return that put a chunk in a hot slot before this either
            // left it to that look (TryTakeChunk takes any slot's) or sees the waiter and settles it.
            Interlocked.Increment(ref _waiters);
            if (_waiting.Count == 0 && TryTakeChunk(largeSize) is { } chunk)
            {
                Interlocked.Decrement(ref _waiters);
                return new(chunk);
            }

            if (_options.BudgetPolicy != ArenaBudgetPolicy.Wait || _options.BudgetWaitTimeout <= TimeSpan.Zero || _waiting.Count >= _options.BudgetQueueLimit)
            {
                Interlocked.Decrement(ref _waiters);
            }
            else
            {
                waiter = new ArenaChunkWaiter(this, largeSize);
                waiter.Node = _waiting.AddLast(waiter);
            }
        }

        if (waiter is null)
        {
            CountRefusal();
            return new((ArenaChunk?)null);
        }

        return new(WaitAsync(waiter, first, second));
    }

    private async Task<ArenaChunk?> WaitAsync(ArenaChunkWaiter waiter, CancellationToken first, CancellationToken second)
    {
        waiter.Arm(_options.BudgetWaitTimeout, first, second);
        try
        {
            return await waiter.Task.ConfigureAwait(false);
        }
        finally
        {
            waiter.Disarm();
        }
    }

    // Under _lock, after room was made: hands chunks to the waiters from the head for as long as the
    // head can be served (strict FIFO: a head that does not fit yet keeps what came back).
    private void ServeWaiters()
    {
        while (!_disposed && _waiting.First is { } head)
        {
            ArenaChunkWaiter waiter = head.Value;
            if (TryTakeChunk(waiter.LargeSize) is not { } chunk)
            {
                return;
            }

            Dequeue(waiter);
            waiter.TrySetResult(chunk);   // its continuation runs elsewhere, after this lock is left
        }
    }

    // Under _lock, at disposal: every waiter is refused.
    private void RefuseWaiters()
    {
        while (_waiting.First is { } head)
        {
            Dequeue(head.Value);
            head.Value.TrySetResult(null);
        }
    }

    // Under _lock.
    private void Dequeue(ArenaChunkWaiter waiter)
    {
        _waiting.Remove(waiter.Node!);
        waiter.Node = null;
        Interlocked.Decrement(ref _waiters);
    }

    // A rent refused for lack of memory: counted, and logged once per episode.
    private void CountRefusal()
    {
        _metrics.Failure("budget_exhausted");
        LogBudgetSpentOnce();
    }
}
