using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.Tests.TestDoubles;
using static AllocHosting.Allocators.Tests.SwitchableBlocks;

namespace AllocHosting.Allocators.Tests;

// Not an unsafe class: the async tests await, which an unsafe context forbids; pointers cross awaits as nuint.
/// <summary>The flow's choice in a <see cref="SwitchableAllocator"/>: scopes restore it, it flows with the execution context, Save and Restore carry it by hand.</summary>
public class SwitchableAllocatorScopeTests
{
    private static unsafe ContextAllocator NewContextOver(nuint region, nuint size) =>
        ContextAllocator.ShortLived(new BumpAllocator((byte*)region, size));

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
}
