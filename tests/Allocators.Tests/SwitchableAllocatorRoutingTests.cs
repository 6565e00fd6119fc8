using System.Runtime.InteropServices;
using AllocHosting.Allocators.Tests.TestDoubles;
using static AllocHosting.Allocators.Tests.SwitchableBlocks;

namespace AllocHosting.Allocators.Tests;

// Not an unsafe class: the async tests await, which an unsafe context forbids; pointers cross awaits as nuint.
/// <summary>Frees and resizes through a <see cref="SwitchableAllocator"/> go to the allocator that owns the block, whatever the current kind and whichever thread makes them.</summary>
public class SwitchableAllocatorRoutingTests
{
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
}
