using System.Diagnostics;
using AllocHosting.Allocators;
using Microsoft.Extensions.Logging.Abstractions;

namespace AllocHosting.Tests;

/// <summary>The budget's queue of waiting rents: FIFO, the rule for a large waiter at the head, limits, cancellation, disposal.</summary>
public sealed class ArenaChunkBudgetWaitingTests : IDisposable
{
    private const int ChunkSize = 16 * 1024;

    private readonly TestMeterFactory _meters = new();
    private readonly List<ArenaChunkBudget> _budgets = [];

    public void Dispose()
    {
        _budgets.ForEach(budget => budget.Dispose());
        _meters.Dispose();
    }

    [Fact]
    public async Task A_returned_chunk_goes_to_the_oldest_waiter_and_a_synchronous_newcomer_cannot_take_it()
    {
        ArenaChunkBudget budget = Create(chunks: 1);
        ArenaChunk held = budget.Take(0)!;
        Task<ArenaChunk?> first = budget.TakeAsync(0, default, default).AsTask();
        Task<ArenaChunk?> second = budget.TakeAsync(0, default, default).AsTask();
        Assert.Equal(2, budget.Waiting);

        budget.Return(held, 0);
        Assert.Null(budget.Take(0));   // handed to the head, not left in the hot slot
        Assert.Same(held, await first.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.False(second.IsCompleted);

        budget.Return(held, 0);
        Assert.Same(held, await second.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(0, budget.Waiting);
    }

    [Fact]
    public async Task A_large_waiter_at_the_head_keeps_what_comes_back_until_it_fits_then_the_small_one_behind_is_served()
    {
        ArenaChunkBudget budget = Create(chunks: 4, maxPerRequest: 4 * ChunkSize);
        ArenaChunk[] held = [budget.Take(0)!, budget.Take(0)!, budget.Take(0)!, budget.Take(0)!];
        Task<ArenaChunk?> large = budget.TakeLargeAsync(budget.LargeChunkSizeFor(2 * ChunkSize), default, default).AsTask();
        Task<ArenaChunk?> small = budget.TakeAsync(0, default, default).AsTask();

        budget.Return(held[0], 0);
        Assert.False(large.IsCompleted);
        Assert.False(small.IsCompleted);   // strict FIFO: the chunk is kept for the head

        budget.Return(held[1], 0);
        Assert.Equal(2 * ChunkSize, (await large.WaitAsync(TimeSpan.FromSeconds(5)))!.Capacity);
        Assert.False(small.IsCompleted);

        budget.Return(held[2], 0);
        Assert.NotNull(await small.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.True(budget.CommittedBytes <= 4 * ChunkSize);
    }

    [Fact]
    public async Task A_large_head_that_times_out_lets_the_waiters_behind_it_be_served_at_once()
    {
        // Half a timeout apart each way: the small one waits before the large one's timeout, and its own
        // ends well after it even when the timers' callbacks run late on a loaded machine (at 200 ms and
        // 100 ms apart both once ran late enough to fire together, and the small one's ran first).
        ArenaChunkBudget budget = Create(chunks: 2, maxPerRequest: 2 * ChunkSize, waitTimeout: TimeSpan.FromSeconds(1));
        ArenaChunk a = budget.Take(0)!, b = budget.Take(0)!;
        Task<ArenaChunk?> large = budget.TakeLargeAsync(budget.LargeChunkSizeFor(2 * ChunkSize), default, default).AsTask();
        budget.Return(a, 0);   // kept for the large head
        await Task.Delay(500);
        Task<ArenaChunk?> small = budget.TakeAsync(0, default, default).AsTask();
        Assert.False(small.IsCompleted);

        Assert.Null(await large.WaitAsync(TimeSpan.FromSeconds(5)));   // refused at its timeout
        Assert.NotNull(await small.WaitAsync(TimeSpan.FromSeconds(5)));
        budget.Return(b, 0);
    }

    [Fact]
    public async Task A_canceled_waiter_leaves_the_queue_and_the_next_is_served()
    {
        ArenaChunkBudget budget = Create(chunks: 1);
        ArenaChunk held = budget.Take(0)!;
        using var cancel = new CancellationTokenSource();
        using var other = new CancellationTokenSource();
        Task<ArenaChunk?> canceled = budget.TakeAsync(0, cancel.Token, other.Token).AsTask();
        Task<ArenaChunk?> next = budget.TakeAsync(0, default, default).AsTask();

        other.Cancel();   // either token cancels
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => canceled.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(1, budget.Waiting);

        budget.Return(held, 0);
        Assert.Same(held, await next.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(0, budget.Waiting);
    }

    [Fact]
    public async Task The_queue_limit_and_the_Reject_policy_refuse_at_once()
    {
        ArenaChunkBudget limited = Create(chunks: 1, queueLimit: 1);
        ArenaChunk held = limited.Take(0)!;
        Task<ArenaChunk?> queued = limited.TakeAsync(0, default, default).AsTask();
        Task<ArenaChunk?> beyond = limited.TakeAsync(0, default, default).AsTask();
        Assert.True(beyond.IsCompletedSuccessfully);
        Assert.Null(await beyond);

        ArenaChunkBudget rejecting = Create(chunks: 1, policy: ArenaBudgetPolicy.Reject);
        ArenaChunk other = rejecting.Take(0)!;
        Task<ArenaChunk?> refused = rejecting.TakeAsync(0, default, default).AsTask();
        Assert.True(refused.IsCompletedSuccessfully);
        Assert.Null(await refused);
        Assert.Equal(0, rejecting.Waiting);

        limited.Return(held, 0);
        Assert.Same(held, await queued.WaitAsync(TimeSpan.FromSeconds(5)));
        rejecting.Return(other, 0);
    }

    [Fact]
    public void A_synchronous_take_on_a_spent_budget_returns_at_once_under_the_Wait_policy()
    {
        ArenaChunkBudget budget = Create(chunks: 1, waitTimeout: TimeSpan.FromSeconds(10));
        Assert.NotNull(budget.Take(0));

        var watch = Stopwatch.StartNew();
        Assert.Null(budget.Take(0));
        Assert.Null(budget.TakeLarge(ChunkSize + 1));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(1), $"took {watch.Elapsed}");
    }

    [Fact]
    public async Task Disposal_refuses_the_waiters()
    {
        ArenaChunkBudget budget = Create(chunks: 1);
        Assert.NotNull(budget.Take(0));
        Task<ArenaChunk?> waiting = budget.TakeAsync(0, default, default).AsTask();

        budget.Dispose();
        Assert.Null(await waiting.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(0, budget.Waiting);
    }

    [Fact]
    public async Task Concurrent_takers_returners_and_cancellations_lose_no_chunk_and_no_wake_up()
    {
        ArenaChunkBudget budget = Create(chunks: 3, maxPerRequest: 2 * ChunkSize);
        long largeSize = budget.LargeChunkSizeFor(2 * ChunkSize);
        int served = 0, canceled = 0, refused = 0;
        Task[] workers = Enumerable.Range(0, 8).Select(worker => Task.Run(async () =>
        {
            var random = new Random(worker);
            for (int i = 0; i < 200; i++)
            {
                bool large = random.Next(5) == 0;
                using var cancel = new CancellationTokenSource();
                if (random.Next(4) == 0)
                {
                    cancel.CancelAfter(random.Next(2));
                }

                ArenaChunk? chunk;
                try
                {
                    chunk = await (large ? budget.TakeLargeAsync(largeSize, cancel.Token, default) : budget.TakeAsync(0, cancel.Token, default));
                }
                catch (OperationCanceledException)
                {
                    Interlocked.Increment(ref canceled);
                    continue;
                }

                if (chunk is null)
                {
                    Interlocked.Increment(ref refused);
                    continue;
                }

                Interlocked.Increment(ref served);
                await Task.Yield();
                if (large)
                {
                    budget.ReturnLarge(chunk);
                }
                else
                {
                    budget.Return(chunk, 0);
                }
            }
        })).ToArray();

        await Task.WhenAll(workers).WaitAsync(TimeSpan.FromSeconds(8));

        Assert.Equal(0, refused);   // chunks keep coming back well within the 10 s timeout: no waiter is forgotten
        Assert.Equal(8 * 200, served + canceled);
        Assert.Equal(0, budget.Waiting);
        Assert.Equal(0, budget.ChunksInUse);
        Assert.True(budget.CommittedBytes <= 3 * ChunkSize, $"{budget.CommittedBytes} bytes committed");
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(SwitchableAllocatorOptions.MaxBudgetQueueLimit + 1)]
    public void The_queue_limit_is_validated_with_a_message_naming_the_setting(int limit)
    {
        var result = new SwitchableAllocatorOptionsValidator().Validate(null, new SwitchableAllocatorOptions { BudgetQueueLimit = limit });

        Assert.True(result.Failed);
        Assert.Contains($"SwitchableAllocators:BudgetQueueLimit is {limit}; allowed: from 0 to {SwitchableAllocatorOptions.MaxBudgetQueueLimit}", result.FailureMessage, StringComparison.Ordinal);
    }

    private ArenaChunkBudget Create(
        int chunks, ArenaBudgetPolicy policy = ArenaBudgetPolicy.Wait, TimeSpan? waitTimeout = null, long maxPerRequest = ChunkSize, int queueLimit = 1024)
    {
        var options = new SwitchableAllocatorOptions
        {
            InitialArenaSize = ChunkSize,
            MemoryBudget = chunks * ChunkSize,
            MaxArenaSizePerRequest = maxPerRequest,
            BudgetPolicy = policy,
            BudgetWaitTimeout = waitTimeout ?? TimeSpan.FromSeconds(10),
            BudgetQueueLimit = queueLimit,
        };
        var source = ArenaChunkSource.ForThisMachine(options, NullLogger.Instance);
        var budget = new ArenaChunkBudget(options, source, new AllocHostingMetrics(_meters, new SwitchableAllocator()), NullLogger.Instance);
        _budgets.Add(budget);
        return budget;
    }
}
