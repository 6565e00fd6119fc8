using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.Model;
using AllocHosting.Allocators.Tests.TestDoubles;
using static AllocHosting.Allocators.Tests.SwitchableBlocks;

namespace AllocHosting.Allocators.Tests;

// Not an unsafe class: the async tests await, which an unsafe context forbids; pointers cross awaits as nuint.
/// <summary>Which allocator a <see cref="SwitchableAllocator"/> dispatches a new allocation to, what it does when that one is exhausted, its statistics and usable sizes.</summary>
public class SwitchableAllocatorTests
{
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

        using (var list = new ReallocatingList(switchable))
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
    // and the list's final buffer (8 MiB) is no longer in use at the end. The total grows by the
    // first block and by every growth that moved, not by all 8 MiB: glibc grows a large block in
    // place (mremap) when the pages after it are free, and a growth in place allocates nothing new.
    [Fact]
    public void Switchable_generation_with_the_default_allocator_frees_everything_it_grew()
    {
        var switchable = new SwitchableAllocator();
        var shared = NativeMemoryAllocator.Shared;
        Assert.Same(shared, switchable.Global);
        Assert.Equal(AllocatorKind.Global, switchable.Current);
        AllocatorStatistics before = shared.Statistics;
        long bufferBytes;

        using (var list = new ReallocatingList(switchable))
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
            Assert.True(shared.Statistics.TotalBytesAllocated > before.TotalBytesAllocated);
        }

        AllocatorStatistics after = shared.Statistics;
        Assert.True(after.BytesInUse - before.BytesInUse < bufferBytes, $"{after.BytesInUse - before.BytesInUse} bytes still in use");
        Assert.True(after.DeallocationCount > before.DeallocationCount);
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
}
