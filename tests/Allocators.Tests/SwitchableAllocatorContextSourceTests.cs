using AllocHosting.Allocators.MemorySources;
using static AllocHosting.Allocators.Tests.SwitchableBlocks;

namespace AllocHosting.Allocators.Tests;

// Not an unsafe class: the async tests await, which an unsafe context forbids; pointers cross awaits as nuint.
/// <summary>Context allocators a <see cref="SwitchableAllocator"/> gets lazily from an <see cref="IContextAllocatorSource"/>.</summary>
public class SwitchableAllocatorContextSourceTests
{
    // A source that counts its calls and hands out the allocator a test sets (a fresh thread-safe bump context by default).
    private sealed class CountingSource : IContextAllocatorSource
    {
        private int _calls;

        public ContextAllocator? Next { get; set; }

        public int Calls => Volatile.Read(ref _calls);

        public Exception? Failure { get; set; }

        // The call from which Failure is thrown (1: every call).
        public int FailFromCall { get; set; } = 1;

        public ContextAllocator GetContextAllocator()
        {
            if (Interlocked.Increment(ref _calls) >= FailFromCall && Failure is not null)
            {
                throw Failure;
            }

            return Next ??= ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, ContextCapacity), threadSafe: true);
        }
    }

    private sealed class ChainingSource : IContextAllocatorSource
    {
        public List<ContextAllocator> Given { get; } = [];

        public ContextAllocator GetContextAllocator() => Given.Count > 0 ? Given[^1] : Next();

        public ContextAllocator? GetContextAllocatorAfter(ContextAllocator exhausted, nuint size, nuint alignment) =>
            Given.Count < 3 ? Next() : null;

        private ContextAllocator Next()
        {
            Given.Add(ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, 4096), threadSafe: true));
            return Given[^1];
        }
    }

    private sealed class NullSource : IContextAllocatorSource
    {
        public ContextAllocator GetContextAllocator() => null!;
    }

    [Fact]
    public void A_context_source_is_asked_only_when_the_flow_first_allocates()
    {
        var switchable = new SwitchableAllocator(new NativeMemoryAllocator(trackOwnership: true));
        var source = new CountingSource();

        using (switchable.UseContext(source))
        {
            Assert.Equal(AllocatorKind.Context, switchable.Current);
            Assert.Same(source, switchable.ContextSource);
            Assert.Null(switchable.Context);
            Assert.Same(source, switchable.Save().ContextSource);
            Assert.Contains("context from a CountingSource", switchable.Save().ToString(), StringComparison.Ordinal);
            Assert.Equal(0, source.Calls);

            nuint block = Allocate(switchable, 100);

            Assert.Equal(2, source.Calls);   // before the carve and after it
            ContextAllocator given = source.Next!;
            Assert.Equal(1, given.Statistics.AllocationCount);
            Assert.True(given.Range.Contains(block));
            Free(switchable, block, 100);
            Assert.Equal(1, given.Statistics.DeallocationCount);
            given.Dispose();
        }

        Assert.Null(switchable.ContextSource);
        Assert.Equal(AllocatorKind.Global, switchable.Current);
    }

    [Fact]
    public async Task Blocks_from_each_allocator_a_source_gives_are_freed_into_it_from_any_mode_and_thread()
    {
        var switchable = new SwitchableAllocator(new NativeMemoryAllocator(trackOwnership: true));
        var source = new CountingSource();
        nuint first, second;
        ContextAllocator firstContext, secondContext;
        using (switchable.UseContext(source))
        {
            first = Allocate(switchable, 64);
            firstContext = source.Next!;
            source.Next = ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, ContextCapacity), threadSafe: true);
            second = Allocate(switchable, 64);
            secondContext = source.Next;
        }

        Assert.Equal(4, source.Calls);   // twice per allocation
        Assert.True(Owns(switchable, first) && Owns(switchable, second));
        // In global mode and on another thread: routed by address to the allocator that handed each out.
        await Task.Run(() =>
        {
            Free(switchable, first, 64);
            Free(switchable, second, 64);
        });

        Assert.Equal(1, firstContext.Statistics.DeallocationCount);
        Assert.Equal(1, secondContext.Statistics.DeallocationCount);
        firstContext.Dispose();
        secondContext.Dispose();
    }

    [Fact]
    public async Task A_context_source_flows_into_Task_Run_and_survives_switching_away_and_back()
    {
        var switchable = new SwitchableAllocator(new NativeMemoryAllocator(trackOwnership: true));
        var source = new CountingSource();
        using (switchable.UseContext(source))
        {
            using (switchable.Use(AllocatorKind.Global))
            {
                Free(switchable, Allocate(switchable, 32), 32);
                Assert.Equal(0, source.Calls);
                using (switchable.Use(AllocatorKind.Context))
                {
                    Assert.Same(source, switchable.ContextSource);
                    Free(switchable, Allocate(switchable, 32), 32);
                    Assert.Equal(2, source.Calls);   // twice per allocation
                }
            }

            nuint fromTask = await Task.Run(() => Allocate(switchable, 48));
            Assert.Equal(4, source.Calls);
            Assert.Equal(2, source.Next!.Statistics.AllocationCount);
            Assert.Equal(source.Next.GetUsableSize(48, 8), switchable.GetUsableSize(48, 8));
            Free(switchable, fromTask, 48);
        }

        source.Next!.Dispose();
    }

    [Fact]
    public void A_source_asked_after_its_allocator_is_full_can_give_another_and_refuse_at_last()
    {
        var switchable = new SwitchableAllocator(new NativeMemoryAllocator(trackOwnership: true));
        var source = new ChainingSource();
        var blocks = new List<nuint>();
        using (switchable.UseContext(source))
        {
            for (int i = 0; i < 3; i++)
            {
                blocks.Add(Allocate(switchable, 3000));   // one per 4 KiB context: each after the first asks again
            }

            Assert.Throws<AllocatorExhaustedException>(() => Allocate(switchable, 3000));
        }

        Assert.Equal(3, source.Given.Count);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(source.Given[i].Range.Contains(blocks[i]));
            Free(switchable, blocks[i], 3000);   // routed to the allocator that gave it
            Assert.Equal(1, source.Given[i].Statistics.DeallocationCount);
            source.Given[i].Dispose();
        }
    }

    // A request that ends on another thread while the allocation carves: the source refuses when it is
    // asked again after the carve, so the block (in a use that is ending) never reaches the caller.
    [Fact]
    public void A_source_that_ends_while_the_allocation_carves_fails_the_allocation()
    {
        var switchable = new SwitchableAllocator(new NativeMemoryAllocator(trackOwnership: true));
        var source = new CountingSource { Failure = new InvalidOperationException("the request ended"), FailFromCall = 2 };
        using (switchable.UseContext(source))
        {
            var error = Assert.Throws<InvalidOperationException>(() => Allocate(switchable, 64));
            Assert.Equal("the request ended", error.Message);
        }

        Assert.Equal(2, source.Calls);
        Assert.Equal(1, source.Next!.Statistics.AllocationCount);   // carved, then withheld: it goes back with the use
        Assert.Equal(0, switchable.Global.Statistics.AllocationCount);
        source.Next.Dispose();
    }

    [Fact]
    public void A_source_that_fails_or_returns_null_fails_the_allocation_and_null_is_refused_at_install()
    {
        var switchable = new SwitchableAllocator(new NativeMemoryAllocator(trackOwnership: true));
        Assert.Throws<ArgumentNullException>(() => switchable.UseContext((IContextAllocatorSource)null!));

        var ended = new CountingSource { Failure = new ObjectDisposedException("request") };
        using (switchable.UseContext(ended))
        {
            Assert.Throws<ObjectDisposedException>(() => Allocate(switchable, 16));
        }

        using (switchable.UseContext(new NullSource()))
        {
            var error = Assert.Throws<InvalidOperationException>(() => Allocate(switchable, 16));
            Assert.Contains("NullSource", error.Message, StringComparison.Ordinal);
        }

        Assert.Equal(0, switchable.Global.Statistics.AllocationCount);
    }
}
