using System.Collections.Concurrent;
using System.Diagnostics;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;
using Xunit.Abstractions;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Issue 11, "Reliability suite": the stress category. The model fuzz with bad input (see
/// <see cref="BadInputModelTests"/>) for as long as <see cref="StressBudget"/> allows, with longer
/// sequences, for every allocator; and threads that allocate, fill, hand blocks to each other, check
/// and free them on every thread-safe allocator. A short run is part of the ordinary test run; a long
/// one is <c>ALLOCHOSTING_STRESS_SECONDS=600 dotnet test --filter Category=Stress</c> (seconds per case).
/// </summary>
[Trait("Category", "Stress")]
public unsafe class StressTests(ITestOutputHelper output)
{
    public static TheoryData<string> Allocators => BadInputModelTests.Allocators;

    /// <summary>The allocators documented as thread-safe (for a context allocator, its thread-safe form).</summary>
    public static TheoryData<string> ThreadSafeAllocators => new()
    {
        "threadlocal", "native", "native-tracked", "memorymap", "memorypool", "switchable", "context-short-concurrent",
        "context-medium-locked", "context-long-locked",
    };

    [Theory]
    [MemberData(nameof(Allocators))]
    public void Model_fuzz_with_bad_input_for_the_whole_budget(string kind)
    {
        if (kind == "memorymap" && !MemoryMapSource.IsSupported)
        {
            return;
        }

        TimeSpan budget = StressBudget.For(TimeSpan.FromMilliseconds(200));
        ModelSettings settings = BadInputSettings.For(kind) with { MaxSteps = 400, Iterations = 4 };
        long maxRounds = StressBudget.CountFor(budget, perSecond: 1_000);
        var clock = Stopwatch.StartNew();
        long steps = 0;
        long rounds = 0;
        do
        {
            steps += AllocatorModel.Run(settings, () => AllocatorFactories.Create(kind));
            rounds++;
        }
        while (clock.Elapsed < budget && rounds < maxRounds);

        output.WriteLine($"{kind}: {steps:N0} steps in {rounds:N0} rounds of {settings.Iterations} sequences, {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(steps > 0, "the fuzz ran");
    }

    [Theory]
    [MemberData(nameof(ThreadSafeAllocators))]
    public void Threads_allocate_fill_exchange_check_and_free(string kind)
    {
        if (kind == "memorymap" && !MemoryMapSource.IsSupported)
        {
            return;
        }

        TimeSpan budget = StressBudget.For(TimeSpan.FromMilliseconds(300));
        long maxOperations = StressBudget.CountFor(budget, perSecond: 2_000_000);
        const int Threads = 4;

        // The concurrent bump allocator grows by moving through its single-threaded path: it is not
        // one of its thread-safe members (ContextAllocator's remarks), so its blocks are not grown here.
        bool grows = kind != "context-short-concurrent";
        using AllocatorBase allocator = CreateThreadSafe(kind);
        var exchange = new ConcurrentQueue<StressBlock>();
        var errors = new ConcurrentQueue<Exception>();
        long operations = 0;
        var clock = Stopwatch.StartNew();
        var threads = new Thread[Threads];
        for (int t = 0; t < Threads; t++)
        {
            int seed = Environment.TickCount ^ (t * 7919);
            threads[t] = new Thread(() =>
            {
                try
                {
                    Work(allocator, exchange, seed, grows, budget, clock, maxOperations / Threads, ref operations);
                }
                catch (Exception e)
                {
                    errors.Enqueue(e);
                }
            });
            threads[t].Start();
        }

        foreach (Thread thread in threads)
        {
            // Generous: each thread stops at the budget; the bound only keeps a hang from blocking the run.
            Assert.True(thread.Join(budget + TimeSpan.FromSeconds(30)), "a stress thread did not finish");
        }

        while (exchange.TryDequeue(out StressBlock block))
        {
            block.Check();
            allocator.Deallocate((byte*)block.Address, block.Size, block.Alignment);
        }

        output.WriteLine($"{kind}: {Interlocked.Read(ref operations):N0} operations on {Threads} threads, {clock.Elapsed.TotalSeconds:F1} s");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors));
        if (kind is "native-tracked" or "memorymap" or "memorypool" or "context-medium-locked" or "context-long-locked")
        {
            // Allocators whose statistics are exact once the threads are done (the thread-local
            // allocator's are approximate until remote frees are drained).
            Assert.Equal(0, allocator.Statistics.BytesInUse);
        }
    }

    // The factories' allocators, and the synchronised forms of the bit set and tree context
    // allocators (ContextAllocator's remarks: thread-safe under the lock they are given).
    private static AllocatorBase CreateThreadSafe(string kind) => kind switch
    {
        "context-medium-locked" => ContextAllocator.MediumLived(new BitSetAllocator(new NativeMemorySource(), blockSize: 64, memorySize: 1 << 20), new Lock()),
        "context-long-locked" => ContextAllocator.LongLived(new MultipleBinarySearchTreeAllocator(new NativeMemorySource(), 1 << 20), new Lock()),
        _ => AllocatorFactories.Create(kind),
    };

    // One thread: allocate, fill with a per-block pattern, keep some blocks and hand the others to
    // any thread through the queue; free own and others' blocks after checking their patterns; grow
    // own blocks and check that the contents moved with them.
    private static void Work(
        AllocatorBase allocator, ConcurrentQueue<StressBlock> exchange, int seed, bool grows,
        TimeSpan budget, Stopwatch clock, long maxOperations, ref long operations)
    {
        var random = new Random(seed);
        var own = new List<StressBlock>();
        long id = (long)seed << 32;
        long done = 0;
        // Bounded by count and by time (the clock is read every 256 operations).
        for (; done < maxOperations && ((done & 255) != 0 || clock.Elapsed < budget); done++)
        {
            int choice = random.Next(10);
            if (choice < 4 || own.Count == 0 && exchange.IsEmpty)
            {
                var size = (nuint)random.Next(1, 4097);
                nuint alignment = (nuint)1 << random.Next(0, 7);
                if (!allocator.TryAllocate(size, alignment, out byte* pointer))
                {
                    continue;   // exhaustion (the bump region) is allowed
                }

                var block = new StressBlock((nuint)pointer, size, alignment, ++id);
                block.Fill();
                if (random.Next(2) == 0)
                {
                    exchange.Enqueue(block);
                }
                else
                {
                    own.Add(block);
                }
            }
            else if (choice < 7 && exchange.TryDequeue(out StressBlock other))
            {
                other.Check();
                allocator.Deallocate((byte*)other.Address, other.Size, other.Alignment);
            }
            else if (choice < 9 && own.Count > 0)
            {
                int index = random.Next(own.Count);
                StressBlock block = own[index];
                block.Check();
                allocator.Deallocate((byte*)block.Address, block.Size, block.Alignment);
                own[index] = own[^1];
                own.RemoveAt(own.Count - 1);
            }
            else if (grows && own.Count > 0)
            {
                int index = random.Next(own.Count);
                StressBlock block = own[index];
                nuint newSize = block.Size + (nuint)random.Next(1, 4097);
                if (allocator.TryGrowingReallocate((byte*)block.Address, block.Size, newSize, block.Alignment, out byte* moved))
                {
                    block.CheckPrefix((nuint)moved);
                    var grown = new StressBlock((nuint)moved, newSize, block.Alignment, block.Id);
                    grown.Fill();
                    own[index] = grown;
                }
            }
        }

        foreach (StressBlock block in own)
        {
            block.Check();
            allocator.Deallocate((byte*)block.Address, block.Size, block.Alignment);
        }

        Interlocked.Add(ref operations, done);
    }

    /// <summary>A block of the cross-thread stress: filled with bytes derived from its id, so that two blocks handed out overlapping show up as a wrong byte in one of them.</summary>
    private readonly record struct StressBlock(nuint Address, nuint Size, nuint Alignment, long Id)
    {
        private byte Pattern => (byte)((Id * 31) % 251 + 1);

        public void Fill()
        {
            var span = new Span<byte>((void*)Address, checked((int)Size));
            span.Fill(Pattern);
            if (Size >= sizeof(long))
            {
                *(long*)Address = Id;
            }
        }

        public void Check() => CheckAt(Address, Size);

        // After a move: the first Size bytes came along.
        public void CheckPrefix(nuint moved) => CheckAt(moved, Size);

        private void CheckAt(nuint address, nuint size)
        {
            Assert.True(Allocator.IsAligned(address, Alignment), $"block {Id} at 0x{address:X} is aligned to {Alignment}");
            var span = new ReadOnlySpan<byte>((void*)address, checked((int)size));
            int start = size >= sizeof(long) ? sizeof(long) : 0;
            if (start != 0)
            {
                Assert.True(*(long*)address == Id, $"block {Id} at 0x{address:X} lost its id: another block overlaps it");
            }

            int bad = span[start..].IndexOfAnyExcept(Pattern);
            Assert.True(bad < 0, $"block {Id} at 0x{address:X} of {size} bytes lost its contents at offset {bad + start}: another block overlaps it");
        }
    }
}
