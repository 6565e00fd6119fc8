using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;
using AllocHosting.Allocators.Tests.TestDoubles;

namespace AllocHosting.Allocators.Tests;

// Not an unsafe class: the async tests await, which an unsafe context forbids; pointers cross awaits as nuint.
public class SwitchableAllocatorTests
{
    private const nuint ContextCapacity = 64 * 1024;

    private static ContextAllocator NewContext(nuint capacity = ContextCapacity) =>
        ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, capacity));

    private static unsafe nuint Allocate(SwitchableAllocator allocator, nuint size, nuint alignment = 8) =>
        (nuint)allocator.Allocate(size, alignment);

    private static unsafe void Free(SwitchableAllocator allocator, nuint address, nuint size, nuint alignment = 8) =>
        allocator.Deallocate((byte*)address, size, alignment);

    private static unsafe bool Owns(SwitchableAllocator allocator, nuint address) => allocator.Owns((byte*)address);

    [Fact]
    public void A_new_flow_is_in_global_mode_and_allocates_from_the_global_allocator()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global);

        Assert.Equal(AllocatorKind.Global, switchable.Current);
        Assert.Null(switchable.Context);
        Assert.Same(global, switchable.Global);
        Assert.True(switchable.RejectsUnownedPointers);

        nuint p = Allocate(switchable, 100);
        Assert.Equal(1, global.Statistics.AllocationCount);
        Assert.Equal(100, global.Statistics.BytesInUse);
        Free(switchable, p, 100);
        Assert.Equal(0, global.Statistics.BytesInUse);
    }

    [Fact]
    public void Default_global_is_the_shared_native_allocator_which_cannot_reject_pointers()
    {
        var switchable = new SwitchableAllocator();

        Assert.Same(NativeMemoryAllocator.Shared, switchable.Global);
        Assert.False(switchable.RejectsUnownedPointers);
    }

    [Fact]
    public async Task Default_thread_local_allocator_is_the_shared_per_thread_heap_and_frees_find_it_from_any_thread()
    {
        var switchable = new SwitchableAllocator();
        Assert.Same(ThreadLocalAllocator.Shared, switchable.ThreadLocal);

        nuint block;
        unsafe
        {
            using (switchable.Use(AllocatorKind.ThreadLocal))
            {
                byte* p = switchable.Allocate(100, 16);
                Assert.True(ThreadLocalAllocator.Shared.Owns(p));
                p[0] = 7;
                block = (nuint)p;
            }
        }

        // Freed in global mode on another thread: routed to the thread-local allocator by address.
        await Task.Run(() =>
        {
            unsafe
            {
                Assert.Equal(AllocatorKind.Global, switchable.Current);
                Assert.Equal(7, *(byte*)block);
                switchable.Deallocate((byte*)block, 100, 16);
            }
        });
    }

    [Fact]
    public unsafe void Allocations_are_dispatched_by_the_current_kind()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var threadLocal = new SynchronizedBumpAllocator();
        using var context = NewContext();
        var switchable = new SwitchableAllocator(global, threadLocal);

        byte* fromGlobal = switchable.Allocate(16, 8);
        byte* fromThread;
        byte* fromContext;
        byte* fromGlobalInsideContext;
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            Assert.Equal(AllocatorKind.ThreadLocal, switchable.Current);
            fromThread = switchable.Allocate(16, 8);
        }

        using (switchable.UseContext(context))
        {
            Assert.Equal(AllocatorKind.Context, switchable.Current);
            Assert.Same(context, switchable.Context);
            fromContext = switchable.Allocate(16, 8);
            using (switchable.Use(AllocatorKind.Global))
            {
                Assert.Same(context, switchable.Context);
                fromGlobalInsideContext = switchable.Allocate(16, 8);
            }
        }

        Assert.True(global.Owns(fromGlobal));
        Assert.True(threadLocal.Owns(fromThread));
        Assert.True(context.Owns(fromContext));
        Assert.True(global.Owns(fromGlobalInsideContext));
        foreach (nuint p in new[] { (nuint)fromGlobal, (nuint)fromThread, (nuint)fromContext, (nuint)fromGlobalInsideContext })
        {
            Assert.True(switchable.Owns((byte*)p));
            Free(switchable, p, 16);
        }

        Assert.Equal(0, global.Statistics.BytesInUse);
    }

    [Fact]
    public unsafe void Frees_are_routed_to_the_owner_while_another_kind_is_current()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var threadLocal = new SynchronizedBumpAllocator();
        using var context = NewContext();
        var switchable = new SwitchableAllocator(global, threadLocal);

        byte* globalBlock = switchable.Allocate(32, 8);
        byte* threadBlock;
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            threadBlock = switchable.Allocate(32, 8);
        }

        using (switchable.UseContext(context))
        {
            byte* contextBlock = switchable.Allocate(32, 8);

            // A global and a thread-local block freed in Context mode.
            switchable.Deallocate(globalBlock, 32, 8);
            switchable.Deallocate(threadBlock, 32, 8);
            Assert.Equal(1, global.Statistics.DeallocationCount);
            Assert.Equal(1, threadLocal.Statistics.DeallocationCount);
            Assert.Equal(0, context.Statistics.DeallocationCount);

            // A context block freed in Global mode.
            using (switchable.Use(AllocatorKind.Global))
            {
                switchable.Deallocate(contextBlock, 32, 8);
            }

            Assert.Equal(1, context.Statistics.DeallocationCount);
            Assert.Equal(0, context.Statistics.BytesInUse);
            Assert.Equal(1, global.Statistics.DeallocationCount);
        }
    }

    [Fact]
    public unsafe void Free_of_a_block_of_an_earlier_context_goes_to_its_owner_not_to_the_context_installed_last()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var first = NewContext();
        using var second = NewContext();
        var switchable = new SwitchableAllocator(global);

        byte* a;
        using (switchable.UseContext(first))
        {
            a = switchable.Allocate(48, 8);
        }

        using (switchable.UseContext(second))
        {
            byte* b = switchable.Allocate(48, 8);

            // The free path tries the context installed last (second) first; a must still reach first.
            switchable.Deallocate(a, 48, 8);
            Assert.Equal(1, first.Statistics.DeallocationCount);
            Assert.Equal(0, second.Statistics.DeallocationCount);

            switchable.Deallocate(b, 48, 8);
            Assert.Equal(1, second.Statistics.DeallocationCount);
        }

        Assert.Equal(0, global.Statistics.AllocationCount + global.Statistics.DeallocationCount);
    }

    [Theory]
    [InlineData("short-lived, thread-safe")]
    [InlineData("medium-lived")]
    [InlineData("long-lived")]
    public unsafe void Context_allocators_other_than_a_plain_bump_allocator_are_served_and_freed_through_the_context_allocator(string form)
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using ContextAllocator context = form switch
        {
            "short-lived, thread-safe" => ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, ContextCapacity), threadSafe: true),
            "medium-lived" => ContextAllocator.MediumLived(new BitSetAllocator(NativeMemorySource.Shared, 64, 1024)),
            _ => ContextAllocator.LongLived(new MultipleBinarySearchTreeAllocator(NativeMemorySource.Shared, ContextCapacity)),
        };
        var switchable = new SwitchableAllocator(global);

        using (switchable.UseContext(context))
        {
            byte* block = switchable.Allocate(100, 8);
            Assert.True(context.Owns(block));
            Assert.Equal(1, context.Statistics.AllocationCount);

            using (switchable.Use(AllocatorKind.Global))
            {
                switchable.Deallocate(block, 100, 8);
            }

            // (A thread-safe bump context never rewinds, so only the count shows the free.)
            Assert.Equal(1, context.Statistics.DeallocationCount);
        }

        Assert.Equal(0, global.Statistics.AllocationCount);
    }

    [Fact]
    public void An_exhausted_context_counts_the_failure_once_in_the_allocator_that_refused()
    {
        using var context = NewContext(4096);
        var switchable = new SwitchableAllocator();

        using (switchable.UseContext(context))
        {
            unsafe
            {
                Assert.False(switchable.TryAllocate(8192, 8, out byte* pointer));
                Assert.True(pointer == null);
            }

            Assert.Throws<AllocatorExhaustedException>(() => Allocate(switchable, 8192));
        }

        Assert.Equal(2, context.Statistics.FailureCount);
        Assert.Equal(0, context.Statistics.AllocationCount);
    }

    [Fact]
    public async Task An_instance_that_served_only_global_flows_sees_the_first_switch_away_from_global_mode()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var threadLocal = new SynchronizedBumpAllocator();
        using var context = NewContext();
        var switchable = new SwitchableAllocator(global, threadLocal);

        // Only global flows so far: allocation does not consult the flow state.
        Free(switchable, Allocate(switchable, 16), 16);
        Assert.Equal(1, global.Statistics.AllocationCount);

        // A switch in another flow; this flow stays global.
        SwitchableAllocatorState saved = await Task.Run(() =>
        {
            using (switchable.Use(AllocatorKind.ThreadLocal))
            {
                Free(switchable, Allocate(switchable, 16), 16);
                return switchable.Save();
            }
        });
        Assert.Equal(1, threadLocal.Statistics.AllocationCount);
        Free(switchable, Allocate(switchable, 16), 16);
        Assert.Equal(2, global.Statistics.AllocationCount);

        // The saved thread-local state restored in a sibling flow; then a fresh instance's first switch installs a context.
        await Task.Run(() =>
        {
            switchable.Restore(saved);
            Free(switchable, Allocate(switchable, 16), 16);
        });
        Assert.Equal(2, threadLocal.Statistics.AllocationCount);

        var fresh = new SwitchableAllocator(global, threadLocal);
        Free(fresh, Allocate(fresh, 16), 16);
        using (fresh.UseContext(context))
        {
            Free(fresh, Allocate(fresh, 16), 16);
        }

        Assert.Equal(1, context.Statistics.AllocationCount);
        Assert.Equal(3, global.Statistics.AllocationCount);
        Assert.Equal(0, global.Statistics.BytesInUse);
        Assert.Equal(2, threadLocal.Statistics.DeallocationCount);
    }

    [Fact]
    public unsafe void A_disposed_context_allocator_still_installed_sends_no_free_its_way()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var context = NewContext();
        var switchable = new SwitchableAllocator(global);

        using (switchable.UseContext(context))
        {
            byte* globalBlock;
            using (switchable.Use(AllocatorKind.Global))
            {
                globalBlock = switchable.Allocate(64, 8);
            }

            // The context allocator is still the flow's (and the free path's first guess), but disposed:
            // its range is empty, so the global block goes to the global allocator.
            context.Dispose();
            switchable.Deallocate(globalBlock, 64, 8);
            Assert.Equal(1, global.Statistics.DeallocationCount);
            Assert.Equal(0, global.Statistics.BytesInUse);
        }
    }

    [Fact]
    public unsafe void W_SW2_freeing_memory_of_a_context_allocator_no_longer_installed_goes_to_that_allocator()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var first = NewContext();
        using var second = NewContext();
        var switchable = new SwitchableAllocator(global);

        byte* block;
        using (switchable.UseContext(first))
        {
            block = switchable.Allocate(48, 16);
        }

        using (switchable.UseContext(second))
        {
            switchable.Deallocate(block, 48, 16);
        }

        Assert.Equal(1, first.Statistics.DeallocationCount);
        Assert.Equal(0, first.Statistics.BytesInUse);
        Assert.Equal(0, second.Statistics.DeallocationCount);
        Assert.Equal(0, global.Statistics.DeallocationCount);
    }

    [Fact]
    public void Blocks_are_routed_to_their_owner_from_any_thread()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var threadLocal = new SynchronizedBumpAllocator();
        using var context = NewContext();
        var switchable = new SwitchableAllocator(global, threadLocal);

        nuint contextBlock;
        nuint threadBlock;
        using (switchable.UseContext(context))
        {
            contextBlock = Allocate(switchable, 24);
            using (switchable.Use(AllocatorKind.ThreadLocal))
            {
                threadBlock = Allocate(switchable, 24);
            }
        }

        var thread = new Thread(() =>
        {
            Free(switchable, threadBlock, 24);
            Free(switchable, contextBlock, 24);
        });
        thread.Start();
        thread.Join();

        Assert.Equal(1, threadLocal.Statistics.DeallocationCount);
        Assert.Equal(1, context.Statistics.DeallocationCount);
        Assert.Equal(0, global.Statistics.DeallocationCount);
    }

    [Fact]
    public unsafe void W_SW2_pointer_nobody_owns_throws_ArgumentException_with_a_tracking_global()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var other = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global);
        byte* foreign = other.Allocate(32, 8);
        byte* mine = switchable.Allocate(32, 8);

        var exception = Assert.Throws<ArgumentException>(() => switchable.Deallocate(foreign, 32, 8));
        Assert.Contains("Nobody owns this pointer", exception.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => switchable.ShrinkingReallocate(foreign, 32, 16, 8));
        Assert.Throws<ArgumentException>(() => switchable.GrowingReallocate(foreign, 32, 64, 8));
        Assert.False(switchable.Owns(foreign));

        // Nothing changed: both blocks are still live where they were.
        Assert.True(other.Owns(foreign));
        Assert.Equal(1, global.Statistics.AllocationCount);
        Assert.Equal(0, global.Statistics.DeallocationCount);
        switchable.Deallocate(mine, 32, 8);
        other.Deallocate(foreign, 32, 8);
    }

    [Fact]
    public unsafe void Memory_of_a_disposed_context_allocator_is_owned_by_nobody()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global);
        var context = NewContext();
        byte* block;
        using (switchable.UseContext(context))
        {
            block = switchable.Allocate(32, 8);
            Assert.True(switchable.Owns(block));
        }

        context.Dispose();

        Assert.False(switchable.Owns(block));
        Assert.Throws<ArgumentException>(() => switchable.Deallocate(block, 32, 8));
        Assert.Throws<ObjectDisposedException>(() => switchable.UseContext(context));
        Assert.Equal(AllocatorKind.Global, switchable.Current);
    }

    [Fact]
    public unsafe void W_SW1_shrink_is_routed_to_the_owners_shrinking_reallocation()
    {
        using var global = new RecordingAllocator();
        using var context = NewContext();
        var switchable = new SwitchableAllocator(global);

        // Global owner: the shrink reaches its shrinking reallocation, never its growing one.
        byte* globalBlock = switchable.Allocate(256, 16);
        globalBlock[0] = 42;
        globalBlock = switchable.ShrinkingReallocate(globalBlock, 256, 64, 16);
        Assert.Equal(1, global.Shrinks);
        Assert.Equal(0, global.Grows);
        Assert.Equal(42, globalBlock[0]);
        Assert.True(switchable.TryShrinkInPlace(globalBlock, 64, 32, 16));
        Assert.Equal(1, global.InPlaceShrinks);

        // Context owner (a bump allocator, where a growing reallocation to a smaller size would
        // throw): shrinking in Global mode shrinks the bump block in place.
        byte* contextBlock;
        using (switchable.UseContext(context))
        {
            contextBlock = switchable.Allocate(1024, 8);
        }

        byte* shrunk = switchable.ShrinkingReallocate(contextBlock, 1024, 100, 8);
        Assert.True(shrunk == contextBlock);
        Assert.Equal((nuint)100, ((BumpAllocator)context.Inner).Used);
        Assert.Equal(1, global.Shrinks);

        byte* reallocated = switchable.Reallocate(shrunk, 100, 50, 8);
        Assert.True(reallocated == contextBlock);
        Assert.Equal((nuint)50, ((BumpAllocator)context.Inner).Used);
        switchable.Deallocate(globalBlock, 32, 16);
    }

    [Fact]
    public unsafe void Growth_is_routed_to_the_owner_whatever_the_current_kind()
    {
        using var global = new RecordingAllocator();
        using var context = NewContext();
        var switchable = new SwitchableAllocator(global);

        byte* contextBlock;
        using (switchable.UseContext(context))
        {
            contextBlock = switchable.Allocate(64, 8);
        }

        // The most recent bump block grows in place; the global allocator is not asked.
        Assert.True(switchable.TryGrowInPlace(contextBlock, 64, 128, 8));
        Assert.True(switchable.GrowingReallocate(contextBlock, 128, 256, 8) == contextBlock);
        Assert.Equal((nuint)256, ((BumpAllocator)context.Inner).Used);
        Assert.Equal(0, global.Grows);
        Assert.Equal(0, global.InPlaceGrows);

        using (switchable.UseContext(context))
        {
            byte* globalBlock;
            using (switchable.Use(AllocatorKind.Global))
            {
                globalBlock = switchable.Allocate(64, 8);
            }

            globalBlock = switchable.GrowingReallocate(globalBlock, 64, 4096, 8);
            Assert.Equal(1, global.Grows);
            Assert.True(global.Owns(globalBlock));
            switchable.Deallocate(globalBlock, 4096, 8);
        }
    }

    // A source that counts its calls and hands out the allocator a test sets (a fresh thread-safe bump context by default).
    private sealed class CountingSource : IContextAllocatorSource
    {
        private int _calls;

        public ContextAllocator? Next { get; set; }

        public int Calls => Volatile.Read(ref _calls);

        public Exception? Failure { get; set; }

        public ContextAllocator GetContextAllocator()
        {
            Interlocked.Increment(ref _calls);
            if (Failure is not null)
            {
                throw Failure;
            }

            return Next ??= ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, ContextCapacity), threadSafe: true);
        }
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

            Assert.Equal(1, source.Calls);
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

        Assert.Equal(2, source.Calls);
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
                    Assert.Equal(1, source.Calls);
                }
            }

            nuint fromTask = await Task.Run(() => Allocate(switchable, 48));
            Assert.Equal(2, source.Calls);
            Assert.Equal(2, source.Next!.Statistics.AllocationCount);
            Assert.Equal(source.Next.GetUsableSize(48, 8), switchable.GetUsableSize(48, 8));
            Free(switchable, fromTask, 48);
        }

        source.Next!.Dispose();
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

    private sealed class NullSource : IContextAllocatorSource
    {
        public ContextAllocator GetContextAllocator() => null!;
    }

    [Fact]
    public void W_SW3_scopes_restore_the_previous_state_when_an_exception_is_thrown()
    {
        using var context = NewContext();
        var switchable = new SwitchableAllocator(threadLocal: NativeMemoryAllocator.Shared);

        void ThrowInsideScopes()
        {
            using (switchable.UseContext(context))
            {
                using (switchable.Use(AllocatorKind.ThreadLocal))
                {
                    throw new InvalidTimeZoneException();
                }
            }
        }

        Assert.Throws<InvalidTimeZoneException>(ThrowInsideScopes);

        Assert.Equal(AllocatorKind.Global, switchable.Current);
        Assert.Null(switchable.Context);
    }

    [Fact]
    public void Nested_scopes_restore_in_reverse_order()
    {
        using var outer = NewContext();
        using var inner = NewContext();
        var switchable = new SwitchableAllocator(threadLocal: NativeMemoryAllocator.Shared);

        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            using (switchable.UseContext(outer))
            {
                using (switchable.Use(AllocatorKind.Global))
                {
                    using (switchable.UseContext(inner))
                    {
                        Assert.Same(inner, switchable.Context);
                        Assert.Equal(AllocatorKind.Context, switchable.Current);
                    }

                    Assert.Same(outer, switchable.Context);
                    Assert.Equal(AllocatorKind.Global, switchable.Current);
                    using (switchable.Use(AllocatorKind.Context))
                    {
                        Assert.Same(outer, switchable.Context);
                        Assert.Equal(AllocatorKind.Context, switchable.Current);
                    }
                }

                Assert.Equal(AllocatorKind.Context, switchable.Current);
            }

            Assert.Null(switchable.Context);
            Assert.Equal(AllocatorKind.ThreadLocal, switchable.Current);
        }

        Assert.Equal(AllocatorKind.Global, switchable.Current);
    }

    [Fact]
    public void Scope_dispose_is_idempotent_also_across_copies()
    {
        var switchable = new SwitchableAllocator(threadLocal: NativeMemoryAllocator.Shared);

        AllocatorScope scope = switchable.Use(AllocatorKind.ThreadLocal);
        AllocatorScope copy = scope;
        Assert.Equal(scope, copy);
        scope.Dispose();
        scope.Dispose();
        copy.Dispose();
        default(AllocatorScope).Dispose();

        Assert.Equal(AllocatorKind.Global, switchable.Current);
    }

    [Fact]
    public void Out_of_order_disposal_throws_and_changes_nothing()
    {
        using var context = NewContext();
        var switchable = new SwitchableAllocator();

        AllocatorScope outer = switchable.UseContext(context);
        AllocatorScope inner = switchable.Use(AllocatorKind.Global);

        Assert.Throws<InvalidOperationException>(outer.Dispose);
        Assert.Equal(AllocatorKind.Global, switchable.Current);
        Assert.Same(context, switchable.Context);

        inner.Dispose();
        Assert.Equal(AllocatorKind.Context, switchable.Current);
        outer.Dispose();
        Assert.Equal(AllocatorKind.Global, switchable.Current);
        Assert.Null(switchable.Context);
    }

    [Fact]
    public void W_SW5_switching_to_a_kind_that_is_not_available_throws_at_switch_time()
    {
        var switchable = new SwitchableAllocator();

        var noContext = Assert.Throws<InvalidOperationException>(() => switchable.Use(AllocatorKind.Context));
        Assert.Contains("UseContext", noContext.Message, StringComparison.Ordinal);
        // Thread-local mode is always available: the default is ThreadLocalAllocator.Shared.
        Assert.Same(ThreadLocalAllocator.Shared, switchable.ThreadLocal);
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            Assert.Equal(AllocatorKind.ThreadLocal, switchable.Current);
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => switchable.Use((AllocatorKind)7));
        Assert.Throws<ArgumentNullException>(() => switchable.UseContext((ContextAllocator)null!));
        Assert.Equal(AllocatorKind.Global, switchable.Current);
    }

    [Fact]
    public void Context_allocator_sharing_a_page_with_another_owner_is_refused_with_a_clear_message()
    {
        using var region = new SynchronizedBumpAllocator(capacity: 8192);
        // A context allocator over the thread-local double's region: same pages, another owner.
        using var context = NewContextOver(region.Range.From + 64, 1024);
        var switchable = new SwitchableAllocator();

        var exception = Assert.Throws<InvalidOperationException>(() => switchable.UseContext(context));
        Assert.Contains("page", exception.Message, StringComparison.Ordinal);
        Assert.Equal(AllocatorKind.Global, switchable.Current);
    }

    private static unsafe ContextAllocator NewContextOver(nuint region, nuint size) =>
        ContextAllocator.ShortLived(new BumpAllocator((byte*)region, size));

    [Fact]
    public void Restore_of_a_state_saved_by_another_instance_throws()
    {
        var first = new SwitchableAllocator();
        var second = new SwitchableAllocator();

        Assert.Throws<ArgumentException>(() => second.Restore(first.Save()));
        second.Restore(default);
        Assert.Equal(AllocatorKind.Global, second.Current);
    }

    [Fact]
    public async Task Save_and_restore_carry_the_state_into_a_hand_scheduled_work_item()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var context = NewContext();
        var switchable = new SwitchableAllocator(global);

        using (switchable.UseContext(context))
        {
            SwitchableAllocatorState state = switchable.Save();
            Assert.Equal(AllocatorKind.Context, state.Kind);
            Assert.Same(context, state.Context);

            var done = new TaskCompletionSource<(AllocatorKind Before, ContextAllocator? BeforeContext, AllocatorKind After, ContextAllocator? AfterContext, nuint Block)>(
                TaskCreationOptions.RunContinuationsAsynchronously);
            ThreadPool.UnsafeQueueUserWorkItem(
                _ =>
                {
                    try
                    {
                        var before = (switchable.Current, switchable.Context);
                        switchable.Restore(state);
                        var after = (switchable.Current, switchable.Context);
                        nuint block = Allocate(switchable, 40);
                        done.SetResult((before.Current, before.Context, after.Current, after.Context, block));
                    }
                    catch (Exception e)
                    {
                        done.SetException(e);
                    }
                },
                null);

            var result = await done.Task;
            Assert.Equal(AllocatorKind.Global, result.Before);
            Assert.Null(result.BeforeContext);
            Assert.Equal(AllocatorKind.Context, result.After);
            Assert.Same(context, result.AfterContext);
            Assert.True(context.Range.Contains(result.Block));
            Assert.Equal(0, global.Statistics.AllocationCount);
            Free(switchable, result.Block, 40);
        }
    }

    [Fact]
    public async Task Context_flows_into_QueueUserWorkItem_and_Task_Run_but_not_UnsafeQueueUserWorkItem()
    {
        using var context = NewContext();
        var switchable = new SwitchableAllocator();

        using (switchable.UseContext(context))
        {
            var flowed = new TaskCompletionSource<ContextAllocator?>(TaskCreationOptions.RunContinuationsAsynchronously);
            ThreadPool.QueueUserWorkItem(_ => flowed.SetResult(switchable.Context));
            var unflowed = new TaskCompletionSource<ContextAllocator?>(TaskCreationOptions.RunContinuationsAsynchronously);
            ThreadPool.UnsafeQueueUserWorkItem(_ => unflowed.SetResult(switchable.Context), null);
            var (kind, fromRun, block) = await Task.Run(() => (switchable.Current, switchable.Context, Allocate(switchable, 16)));

            Assert.Same(context, await flowed.Task);
            Assert.Null(await unflowed.Task);
            Assert.Equal(AllocatorKind.Context, kind);
            Assert.Same(context, fromRun);
            Assert.True(context.Range.Contains(block));
        }
    }

    [Fact]
    public async Task Context_flows_through_await_onto_another_thread_whose_cache_held_another_state()
    {
        using var context = NewContext();
        var switchable = new SwitchableAllocator();
        using var worker = new DedicatedThread();

        // The worker thread first sees this instance in global mode, so its cache holds that state.
        Assert.Equal(AllocatorKind.Global, await worker.Run(() => switchable.Current));

        using (switchable.UseContext(context))
        {
            await worker.SwitchTo();
            Assert.Equal(worker.ThreadId, Environment.CurrentManagedThreadId);
            Assert.Equal(AllocatorKind.Context, switchable.Current);
            Assert.Same(context, switchable.Context);
            Assert.True(context.Range.Contains(Allocate(switchable, 8)));

            await Task.Yield();
            Assert.Equal(AllocatorKind.Context, switchable.Current);
            Assert.Same(context, switchable.Context);
        }

        Assert.Equal(AllocatorKind.Global, switchable.Current);

        // Back in the worker's own (default) context, the cache says global again.
        Assert.Equal(AllocatorKind.Global, await worker.Run(() => switchable.Current));
        Assert.Null(await worker.Run(() => switchable.Context));
    }

    [Fact]
    public async Task A_switch_in_a_child_async_method_does_not_leak_to_the_caller()
    {
        using var context = NewContext();
        var switchable = new SwitchableAllocator(threadLocal: NativeMemoryAllocator.Shared);

        async Task SwitchWithoutRestoring()
        {
            _ = switchable.UseContext(context);
            await Task.Yield();
            Assert.Same(context, switchable.Context);
            _ = switchable.Use(AllocatorKind.ThreadLocal);
        }

        await SwitchWithoutRestoring();

        Assert.Equal(AllocatorKind.Global, switchable.Current);
        Assert.Null(switchable.Context);
    }

    [Fact]
    public async Task Concurrent_flows_with_their_own_context_allocators_never_mix()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global);
        var contexts = new ConcurrentBag<ContextAllocator>();

        async Task Flow()
        {
            var context = NewContext(16 * 1024);
            contexts.Add(context);
            using (switchable.UseContext(context))
            {
                for (int round = 0; round < 40; round++)
                {
                    nuint block = Allocate(switchable, 64);
                    Assert.True(context.Range.Contains(block));
                    await Task.Yield();
                    Assert.Same(context, switchable.Context);
                    Free(switchable, block, 64);
                }
            }

            Assert.Equal(AllocatorKind.Global, switchable.Current);
            Assert.Equal(40, context.Statistics.DeallocationCount);
            Assert.Equal(0, context.Statistics.BytesInUse);
        }

        try
        {
            await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(Flow)));
        }
        finally
        {
            foreach (var context in contexts)
            {
                context.Dispose();
            }
        }

        Assert.Equal(0, global.Statistics.AllocationCount);
    }

    [Fact]
    public async Task Two_instances_keep_separate_states_on_one_thread()
    {
        using var firstContext = NewContext();
        using var threadLocal = new SynchronizedBumpAllocator();
        var first = new SwitchableAllocator();
        var second = new SwitchableAllocator(threadLocal: threadLocal);

        using (first.UseContext(firstContext))
        using (second.Use(AllocatorKind.ThreadLocal))
        {
            for (int i = 0; i < 3; i++)
            {
                Assert.True(firstContext.Range.Contains(Allocate(first, 8)));
                Assert.True(threadLocal.Range.Contains(Allocate(second, 8)));
                await Task.Yield();
            }

            Assert.Equal(AllocatorKind.Context, first.Current);
            Assert.Equal(AllocatorKind.ThreadLocal, second.Current);
        }
    }

    [Fact]
    public unsafe void Exhausted_context_allocator_fails_by_default()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var context = NewContext(4096);
        var switchable = new SwitchableAllocator(global);

        using (switchable.UseContext(context))
        {
            Assert.Throws<AllocatorExhaustedException>(() => Allocate(switchable, 8192));
            Assert.False(switchable.TryAllocate(8192, 8, out _));
        }

        Assert.Equal(0, global.Statistics.AllocationCount);
    }

    [Fact]
    public unsafe void Fallback_to_global_serves_what_the_context_allocator_cannot()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var context = NewContext(4096);
        var switchable = new SwitchableAllocator(global) { FallBackToGlobal = true };

        using (switchable.UseContext(context))
        {
            byte* large = switchable.Allocate(8192, 8);
            Assert.True(global.Owns(large));

            byte* small = switchable.Allocate(1024, 8);
            small[0] = 7;
            small[1023] = 9;
            Assert.True(context.Owns(small));
            byte* grown = switchable.GrowingReallocate(small, 1024, 6000, 8);
            Assert.True(global.Owns(grown));
            Assert.Equal(7, grown[0]);
            Assert.Equal(9, grown[1023]);
            Assert.Equal(1, context.Statistics.DeallocationCount);

            switchable.Deallocate(large, 8192, 8);
            switchable.Deallocate(grown, 6000, 8);
        }

        Assert.Equal(0, global.Statistics.BytesInUse);
    }

    [Fact]
    public void Statistics_sum_the_global_and_thread_local_allocators()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        using var threadLocal = new SynchronizedBumpAllocator();
        var switchable = new SwitchableAllocator(global, threadLocal);

        nuint a = Allocate(switchable, 100);
        nuint b;
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            b = Allocate(switchable, 50);
        }

        var statistics = switchable.Statistics;
        Assert.Equal(global.Statistics.BytesInUse + threadLocal.Statistics.BytesInUse, statistics.BytesInUse);
        Assert.Equal(2, statistics.AllocationCount);
        Assert.Null(statistics.Capacity);
        Free(switchable, a, 100);
        Free(switchable, b, 50);
        Assert.Equal(2, switchable.Statistics.DeallocationCount);
    }

    [Fact]
    public void Usable_size_is_that_of_the_allocator_serving_the_flow()
    {
        using var context = NewContext();
        var switchable = new SwitchableAllocator();

        Assert.Equal((nuint)100, switchable.GetUsableSize(100, 8));
        using (switchable.UseContext(context))
        {
            Assert.Equal(context.GetUsableSize(100, 8), switchable.GetUsableSize(100, 8));
        }

        // Servers whose usable size differs from the request, so that asking the wrong one fails.
        using var bitSetContext = ContextAllocator.MediumLived(new BitSetAllocator(NativeMemorySource.Shared, 64, ContextCapacity));
        using (switchable.UseContext(bitSetContext))
        {
            Assert.Equal((nuint)128, switchable.GetUsableSize(100, 8));
            Assert.Equal(bitSetContext.GetUsableSize(100, 8), switchable.GetUsableSize(100, 8));
        }

        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            nuint slabSize = switchable.ThreadLocal.GetUsableSize(100, 8);
            Assert.True(slabSize > 100, $"the size class of 100 B is {slabSize}");
            Assert.Equal(slabSize, switchable.GetUsableSize(100, 8));
        }

        Assert.Equal((nuint)100, switchable.GetUsableSize(100, 8));
    }

    // The seed's switchable_generation test: a million-element native list grown through the
    // switchable allocator in global mode.
    [Fact]
    public void Switchable_generation_grows_a_million_element_native_list_in_global_mode()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global);
        Assert.Equal(AllocatorKind.Global, switchable.Current);

        using (var list = new NativeList(switchable))
        {
            for (int i = 0; i < 1_000_000; i++)
            {
                list.Add(i * 3L);
            }

            Assert.Equal(1_000_000, list.Count);
            for (int i = 0; i < list.Count; i++)
            {
                if (list[i] != i * 3L)
                {
                    Assert.Fail($"element {i} is {list[i]}");
                }
            }

            Assert.Equal((long)list.Capacity * sizeof(long), global.Statistics.BytesInUse);
        }

        Assert.Equal(0, global.Statistics.BytesInUse);
    }

    // The seed's switchable_generation test as the seed wrote it: the default switchable allocator,
    // whose global allocator is the untracked NativeMemoryAllocator.Shared. Other tests use that
    // instance in parallel, so the checks allow for their blocks: the total allocated only grows,
    // and the list's final buffer (8 MiB) is no longer in use at the end.
    [Fact]
    public void Switchable_generation_with_the_default_allocator_frees_everything_it_grew()
    {
        var switchable = new SwitchableAllocator();
        var shared = NativeMemoryAllocator.Shared;
        Assert.Same(shared, switchable.Global);
        Assert.Equal(AllocatorKind.Global, switchable.Current);
        AllocatorStatistics before = shared.Statistics;
        long bufferBytes;

        using (var list = new NativeList(switchable))
        {
            for (int i = 0; i < 1_000_000; i++)
            {
                list.Add(i * 3L);
            }

            Assert.Equal(1_000_000, list.Count);
            for (int i = 0; i < list.Count; i++)
            {
                if (list[i] != i * 3L)
                {
                    Assert.Fail($"element {i} is {list[i]}");
                }
            }

            bufferBytes = (long)list.Capacity * sizeof(long);
            Assert.True(shared.Statistics.TotalBytesAllocated - before.TotalBytesAllocated >= bufferBytes);
        }

        AllocatorStatistics after = shared.Statistics;
        Assert.True(after.BytesInUse - before.BytesInUse < bufferBytes, $"{after.BytesInUse - before.BytesInUse} bytes still in use");
        Assert.True(after.DeallocationCount > before.DeallocationCount);
    }

    // A block too large for the slabs, taken in thread-local mode (the thread-local allocator's
    // fallback serves it), is freed on another thread in global mode: the routing finds the
    // fallback (the default memory map allocator, which registers its blocks) as its owner.
    [LinuxFact]
    public async Task Over_size_thread_local_block_is_freed_from_another_thread_in_global_mode()
    {
        using var threadLocal = new ThreadLocalAllocator();
        IAllocator fallback = threadLocal.Fallback;
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global, threadLocal);
        nuint size = threadLocal.MaximumSlabSize + 1;

        nuint block;
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            block = Allocate(switchable, size);
        }

        Assert.NotEqual((nuint)0, block);
        Assert.Equal(1, fallback.Statistics.AllocationCount);
        Assert.True(fallback.Statistics.BytesInUse >= (long)size);
        Assert.Equal(0, global.Statistics.AllocationCount);

        await Task.Run(() =>
        {
            Assert.Equal(AllocatorKind.Global, switchable.Current);
            Free(switchable, block, size);
        });

        Assert.Equal(1, fallback.Statistics.DeallocationCount);
        Assert.Equal(0, fallback.Statistics.BytesInUse);
        Assert.Equal(0, global.Statistics.AllocationCount);
        Assert.Equal(0, global.Statistics.DeallocationCount);
    }

    // A user-supplied memory map allocator as fallback registers its own blocks, so routing by
    // address reaches it from any mode and thread; before, such blocks were taken for the global
    // allocator's (with an untracked global: NativeMemory.Free on an mmap'ed pointer).
    [LinuxFact]
    public async Task Over_size_blocks_of_a_user_supplied_memory_map_fallback_are_freed_by_it_from_any_mode_and_thread()
    {
        using var fallback = new MemoryMapAllocator();
        using var threadLocal = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { Fallback = fallback, MaximumSlabSize = 4096 });
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global, threadLocal);
        nuint size = 3 * 4096;

        nuint first;
        nuint second;
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            first = Allocate(switchable, size);
            second = Allocate(switchable, size);
        }

        Assert.Equal(2, fallback.Statistics.AllocationCount);
        Assert.Equal(2 * (long)size, switchable.Statistics.BytesInUse);

        Free(switchable, first, size);
        await Task.Run(() =>
        {
            Assert.Equal(AllocatorKind.Global, switchable.Current);
            Free(switchable, second, size);
        });

        Assert.Equal(2, fallback.Statistics.DeallocationCount);
        Assert.Equal(0, fallback.Statistics.BytesInUse);
        Assert.Equal(0, fallback.LiveBlockCount);
        Assert.Equal(0, global.Statistics.AllocationCount);
        Assert.Equal(0, global.Statistics.DeallocationCount);
        Assert.Equal(0, switchable.Statistics.BytesInUse);
        Assert.Equal(2, switchable.Statistics.DeallocationCount);
    }

    [LinuxFact]
    public unsafe void Grow_shrink_owns_and_usable_size_of_a_memory_map_fallback_block_reach_it_through_the_switchable_allocator()
    {
        using var fallback = new MemoryMapAllocator();
        using var threadLocal = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { Fallback = fallback, MaximumSlabSize = 4096 });
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global, threadLocal);
        nuint page = fallback.Granularity;

        byte* block;
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            // Usable size in thread-local mode is the fallback's (page-rounded), not the request.
            Assert.Equal(fallback.GetUsableSize(5000, 8), switchable.GetUsableSize(5000, 8));
            Assert.Equal(page * 2, switchable.GetUsableSize(page + 1, 8));
            block = switchable.Allocate(5000, 8);
        }

        new Span<byte>(block, 5000).Fill(7);
        Assert.True(switchable.Owns(block + 4999));
        Assert.True(switchable.TryGrowInPlace(block, 5000, 2 * page, 8)); // within the mapping

        byte* grown = switchable.GrowingReallocate(block, 2 * page, 64 * page, 8);
        Assert.True(fallback.Owns(grown));
        Assert.True(new Span<byte>(grown, 5000).IndexOfAnyExcept((byte)7) < 0);
        Assert.Equal(64 * (long)page, fallback.Statistics.BytesInUse);

        Assert.True(switchable.TryShrinkInPlace(grown, 64 * page, 32 * page, 8));
        Assert.Equal(32 * (long)page, fallback.Statistics.BytesInUse);

        byte* shrunk = switchable.ShrinkingReallocate(grown, 32 * page, 4 * page, 8);
        Assert.True(fallback.Owns(shrunk));
        Assert.Equal(4 * (long)page, fallback.Statistics.BytesInUse);

        switchable.Deallocate(shrunk, 4 * page, 8);
        Assert.Equal(0, fallback.LiveBlockCount);
        Assert.Equal(0, global.Statistics.AllocationCount);
        Assert.Equal(0, global.Statistics.DeallocationCount);
        Assert.Equal(0, global.Statistics.FailureCount);
    }

    // A fallback that does not register its blocks but tracks them (a tracking native allocator,
    // distinct from the global) is asked before the global allocator about unregistered pointers,
    // also when the global is an untracked native allocator whose free path otherwise skips all checks.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Over_size_blocks_of_a_tracking_native_fallback_are_routed_to_it_before_the_global(bool trackingGlobal)
    {
        using var fallback = new NativeMemoryAllocator(trackOwnership: true);
        using var threadLocal = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { Fallback = fallback, MaximumSlabSize = 4096 });
        using var global = new NativeMemoryAllocator(trackOwnership: trackingGlobal);
        var switchable = new SwitchableAllocator(global, threadLocal);
        nuint size = 10_000;

        nuint first;
        nuint second;
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            Assert.Equal(size, switchable.GetUsableSize(size, 8));
            first = Allocate(switchable, size);
            second = Allocate(switchable, size);
        }

        nuint globalBlock = Allocate(switchable, 100);
        Assert.Equal(2, fallback.Statistics.AllocationCount);
        unsafe
        {
            Assert.True(switchable.Owns((byte*)first));
            Assert.Equal(trackingGlobal, switchable.Owns((byte*)globalBlock));

            byte* grown = switchable.GrowingReallocate((byte*)first, size, 4 * size, 8);
            Assert.True(fallback.Owns(grown));
            Assert.False(switchable.TryGrowInPlace(grown, 4 * size, 5 * size, 8)); // the fallback never grows in place
            Assert.True(switchable.TryShrinkInPlace(grown, 4 * size, 3 * size, 8));
            byte* shrunk = switchable.ShrinkingReallocate(grown, 3 * size, 2 * size, 8);
            Assert.True(fallback.Owns(shrunk));
            first = (nuint)shrunk;
        }

        Free(switchable, first, 2 * size);
        await Task.Run(() =>
        {
            Assert.Equal(AllocatorKind.Global, switchable.Current);
            Free(switchable, second, size);
        });

        Assert.Equal(0, fallback.Statistics.BytesInUse);
        Assert.Equal(0, global.Statistics.DeallocationCount);
        Assert.Equal(1, global.Statistics.AllocationCount);
        Free(switchable, globalBlock, 100);
        Assert.Equal(1, global.Statistics.DeallocationCount);
        Assert.Equal(0, switchable.Statistics.BytesInUse);
    }

    [Fact]
    public void Thread_local_allocator_whose_fallback_cannot_tell_its_blocks_is_refused_at_construction()
    {
        var untracked = new NativeMemoryAllocator();
        using var threadLocal = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { Fallback = untracked });

        var exception = Assert.Throws<ArgumentException>(() => new SwitchableAllocator(NativeMemoryAllocator.Shared, threadLocal));

        Assert.Equal("threadLocal", exception.ParamName);
        Assert.Contains("cannot tell its own blocks", exception.Message, StringComparison.Ordinal);
        Assert.Contains("MemoryMapAllocator", exception.Message, StringComparison.Ordinal);
        Assert.Contains("NativeMemoryAllocator(trackOwnership: true)", exception.Message, StringComparison.Ordinal);
        Assert.Contains("the global allocator itself", exception.Message, StringComparison.Ordinal);

        // The same fallback is fine when it is the global allocator: unregistered pointers go there anyway.
        _ = new SwitchableAllocator(untracked, threadLocal);
    }

    [Fact]
    public unsafe void Thread_local_allocator_whose_fallback_is_the_global_allocator_frees_there_and_is_counted_once()
    {
        var global = new NativeMemoryAllocator();
        using var threadLocal = new ThreadLocalAllocator(new ThreadLocalAllocatorOptions { Fallback = global, MaximumSlabSize = 4096 });
        var switchable = new SwitchableAllocator(global, threadLocal);

        byte* block;
        using (switchable.Use(AllocatorKind.ThreadLocal))
        {
            block = switchable.Allocate(10_000, 8);
        }

        Assert.Equal(1, switchable.Statistics.AllocationCount);
        Assert.Equal(10_000, switchable.Statistics.BytesInUse);
        switchable.Deallocate(block, 10_000, 8);
        Assert.Equal(1, global.Statistics.DeallocationCount);
        Assert.Equal(1, switchable.Statistics.DeallocationCount);
        Assert.Equal(0, switchable.Statistics.BytesInUse);
    }

    // Model: AllocatorModel's list of live blocks (contents, alignment, no overlap, ownership), run in
    // Context mode over a small context allocator with fallback to a tracking global allocator, so
    // that blocks of both owners are freed, grown and shrunk through the routing.
    [Fact]
    public void Model_based_mixed_owner_sequences_keep_every_block_intact()
    {
        var created = new List<(NativeMemoryAllocator Global, ContextAllocator Context)>();
        try
        {
            long steps = AllocatorModel.Run(
                new ModelSettings { Iterations = 60, MaxSteps = 120, MaxSize = 2048 },
                () =>
                {
                    var global = new NativeMemoryAllocator(trackOwnership: true);
                    var context = NewContext(16 * 1024);
                    created.Add((global, context));
                    var switchable = new SwitchableAllocator(global) { FallBackToGlobal = true };
                    _ = switchable.UseContext(context); // lasts for this test's flow; each sequence has a new instance
                    return switchable;
                },
                afterAllFreed: switchable =>
                {
                    Assert.Equal(0, switchable.Global.Statistics.BytesInUse);
                    Assert.Equal(AllocatorKind.Context, switchable.Current);
                });

            Assert.True(steps >= 2000, $"ran {steps} steps");
        }
        finally
        {
            foreach (var (global, context) in created)
            {
                context.Dispose();
                global.Dispose();
            }
        }
    }

    /// <summary>One thread running posted actions and await continuations, so a test knows where a continuation runs.</summary>
    private sealed class DedicatedThread : IDisposable
    {
        private readonly BlockingCollection<Action> _work = [];
        private readonly Thread _thread;

        public DedicatedThread()
        {
            _thread = new Thread(() =>
            {
                foreach (var action in _work.GetConsumingEnumerable())
                {
                    action();
                }
            })
            { IsBackground = true };
            _thread.Start();
        }

        public int ThreadId => _thread.ManagedThreadId;

        // Runs without the caller's execution context: the thread's own (default) context.
        public Task<T> Run<T>(Func<T> function)
        {
            var result = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
            _work.Add(() => result.SetResult(function()));
            return result.Task;
        }

        public SwitchAwaitable SwitchTo() => new(this);

        public void Dispose()
        {
            _work.CompleteAdding();
            _thread.Join();
            _work.Dispose();
        }

        public readonly struct SwitchAwaitable(DedicatedThread thread) : INotifyCompletion
        {
            public SwitchAwaitable GetAwaiter() => this;

            public bool IsCompleted => false;

            public void GetResult()
            {
            }

            // The async method builder runs the continuation in the awaiting flow's execution context.
            public void OnCompleted(Action continuation) => thread._work.Add(continuation);
        }
    }
}
