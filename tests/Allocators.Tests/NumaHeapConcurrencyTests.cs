using System.Collections.Concurrent;
using System.Diagnostics;

namespace AllocHosting.Allocators.Tests;

/// <summary><see cref="NumaHeapAllocator"/> under many threads: blocks allocated on one node and freed on another, patterns intact, heaps valid; the spin lock under contention.</summary>
public unsafe class NumaHeapConcurrencyTests
{
    private const int Threads = 4;
    private const int OperationsPerThread = 20_000;

    [LinuxFact]
    public void Four_threads_on_two_nodes_allocate_exchange_check_and_free()
    {
        using var machine = new NumaHeapTestMachine();
        using NumaHeapAllocator allocator = machine.CreateAllocator(heapsPerNode: 2);
        var exchange = new ConcurrentQueue<(nint Pointer, int Size, byte Fill)>();
        var failures = new ConcurrentQueue<string>();
        var clock = Stopwatch.StartNew();
        var budget = TimeSpan.FromSeconds(5);
        using var barrier = new Barrier(Threads);

        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            machine.CurrentCpu = t % 2;   // threads 0 and 2 on node 0, 1 and 3 on node 1
            var random = new Random(t);
            var own = new List<(nint Pointer, int Size, byte Fill)>();
            barrier.SignalAndWait();
            for (int i = 0; i < OperationsPerThread && clock.Elapsed < budget; i++)
            {
                int action = random.Next(10);
                if (action < 5 || own.Count == 0)
                {
                    int size = random.Next(20) == 0 ? random.Next(1, 100_000) : random.Next(1, 3000);
                    byte fill = (byte)random.Next(1, 256);
                    var block = (nint)allocator.Allocate((nuint)size, 16);
                    new Span<byte>((byte*)block, size).Fill(fill);
                    own.Add((block, size, fill));
                }
                else if (action < 7)
                {
                    // Hand a block to whichever thread takes it next (often on the other node).
                    int pick = random.Next(own.Count);
                    exchange.Enqueue(own[pick]);
                    own[pick] = own[^1];
                    own.RemoveAt(own.Count - 1);
                }
                else
                {
                    (nint Pointer, int Size, byte Fill) block;
                    if (!exchange.TryDequeue(out block))
                    {
                        int pick = random.Next(own.Count);
                        block = own[pick];
                        own[pick] = own[^1];
                        own.RemoveAt(own.Count - 1);
                    }

                    Check(block, failures);
                    allocator.Deallocate((byte*)block.Pointer, (nuint)block.Size, 16);
                }
            }

            foreach (var block in own)
            {
                Check(block, failures);
                allocator.Deallocate((byte*)block.Pointer, (nuint)block.Size, 16);
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        while (exchange.TryDequeue(out var block))
        {
            Check(block, failures);
            allocator.Deallocate((byte*)block.Pointer, (nuint)block.Size, 16);
        }

        Assert.Empty(failures);
        Assert.Null(allocator.Validate());
        AllocatorStatistics statistics = allocator.Statistics;
        Assert.Equal(0, statistics.BytesInUse);
        Assert.Equal(statistics.AllocationCount, statistics.DeallocationCount);
        Assert.True(allocator.GetHeaps().Count(h => h.SegmentCount > 0) >= 2, "both nodes' heaps were used");
    }

    [Fact]
    public void The_spin_lock_serialises_four_threads_incrementing_a_plain_counter()
    {
        var holder = new LockHolder();
        const int Increments = 50_000;
        using var barrier = new Barrier(Threads);
        var threads = Enumerable.Range(0, Threads).Select(_ => new Thread(() =>
        {
            barrier.SignalAndWait();
            for (int i = 0; i < Increments; i++)
            {
                holder.Lock.Enter();
                holder.Counter++;      // not atomic: only the lock keeps increments from being lost
                holder.Lock.Exit();
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        Assert.Equal(Threads * Increments, holder.Counter);
        Assert.False(holder.Lock.IsHeld);
        Assert.True(holder.Lock.TryEnter());
        Assert.False(holder.Lock.TryEnter());
        holder.Lock.Exit();
    }

    [Fact]
    public void A_waiter_gets_the_lock_once_a_holder_releases_it()
    {
        var holder = new LockHolder();
        holder.Lock.Enter();
        using var started = new ManualResetEventSlim();
        var waiter = new Thread(() =>
        {
            started.Set();
            holder.Lock.Enter();      // spins, then yields, until the test thread releases
            holder.Counter = 1;
            holder.Lock.Exit();
        });
        waiter.Start();
        Assert.True(started.Wait(TimeSpan.FromSeconds(5)));
        Thread.Sleep(50);
        Assert.Equal(0, holder.Counter);
        holder.Lock.Exit();
        Assert.True(waiter.Join(TimeSpan.FromSeconds(5)));
        Assert.Equal(1, holder.Counter);
        Assert.True(holder.Lock.ContentionCount >= 1);
    }

    private static void Check((nint Pointer, int Size, byte Fill) block, ConcurrentQueue<string> failures)
    {
        int wrong = new Span<byte>((byte*)block.Pointer, block.Size).IndexOfAnyExcept(block.Fill);
        if (wrong >= 0)
        {
            failures.Enqueue($"block 0x{block.Pointer:X} of {block.Size} bytes: byte {wrong} is not {block.Fill}");
        }
    }

    private sealed class LockHolder
    {
        public NumaHeapSpinLock Lock;
        public int Counter;
    }
}
