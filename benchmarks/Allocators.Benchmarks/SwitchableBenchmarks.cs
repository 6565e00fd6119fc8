using AllocHosting.Allocators.MemorySources;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// The dispatch cost of <see cref="SwitchableAllocator"/>, each case beside the allocator it
/// dispatches to (the baseline of its category):
/// <list type="bullet">
/// <item>the seed's two benches (seed-reference 14): a native list of 8-byte values with capacity
/// 10,000,000 (80 MB) filled with 1,000,000 appends, then freed, over
/// <see cref="NativeMemoryAllocator.Shared"/> directly and through a switchable allocator left in
/// global mode (target: ≤ 1.05× the plain allocator);</item>
/// <item>small-allocation churn, 64-byte alloc+free pairs, in each mode against the allocator that
/// mode reaches; global mode twice: on an instance whose flows never left global mode (allocation
/// skips the per-thread state) and on one where some flow has switched (the usual case once
/// context allocators are in use).</item>
/// </list>
/// A churn invocation switches mode once (a scope) and runs <see cref="ChurnPairs"/> pairs, so the
/// switch is amortised and the figures are per pair.
/// </summary>
[MemoryDiagnoser]
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public unsafe class SwitchableBenchmarks
{
    private const int ListCapacity = 10_000_000;
    private const int ListAppends = 1_000_000;
    private const int ChurnPairs = 1_000;
    private const nuint ChurnSize = 64;
    private const nuint Alignment = 8;

    private SwitchableAllocator _switchable = null!;
    private SwitchableAllocator _switched = null!;
    private IAllocator _threadLocal = null!;
    private ContextAllocator _context = null!;
    private ContextAllocator _threadSafeContext = null!;
    private FixedSource _source = null!;

    [GlobalSetup]
    public void Setup()
    {
        // The defaults: NativeMemoryAllocator.Shared as global, ThreadLocalAllocator.Shared as thread-local.
        _switchable = new SwitchableAllocator();
        _switched = new SwitchableAllocator();
        using (_switched.Use(AllocatorKind.ThreadLocal))
        {
            // Any flow leaving global mode makes every later allocation read the flow state.
        }
        _threadLocal = _switchable.ThreadLocal!;
        _context = ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, 1 << 20));
        _threadSafeContext = ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, 1 << 20), threadSafe: true);
        _source = new FixedSource(_threadSafeContext);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _context.Dispose();
        _threadSafeContext.Dispose();
    }

    [Benchmark(Baseline = true, Description = "list 80 MB / 1M appends, NativeMemoryAllocator")]
    [BenchmarkCategory("seed list")]
    public long SeedListPlain() => FillList(NativeMemoryAllocator.Shared);

    [Benchmark(Description = "list 80 MB / 1M appends, switchable (global mode)")]
    [BenchmarkCategory("seed list")]
    public long SeedListSwitchable() => FillList(_switchable);

    [Benchmark(Baseline = true, OperationsPerInvoke = ChurnPairs, Description = "64 B churn, NativeMemoryAllocator")]
    [BenchmarkCategory("churn global")]
    public nuint ChurnGlobalPlain() => Churn(NativeMemoryAllocator.Shared);

    [Benchmark(OperationsPerInvoke = ChurnPairs, Description = "64 B churn, switchable (global mode)")]
    [BenchmarkCategory("churn global")]
    public nuint ChurnGlobalSwitchable()
    {
        using (_switchable.Use(AllocatorKind.Global))
        {
            return Churn(_switchable);
        }
    }

    [Benchmark(OperationsPerInvoke = ChurnPairs, Description = "64 B churn, switchable (global mode, after a switch)")]
    [BenchmarkCategory("churn global")]
    public nuint ChurnGlobalSwitchableAfterSwitch()
    {
        using (_switched.Use(AllocatorKind.Global))
        {
            return Churn(_switched);
        }
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = ChurnPairs, Description = "64 B churn, thread-local allocator")]
    [BenchmarkCategory("churn thread-local")]
    public nuint ChurnThreadLocalPlain() => Churn(_threadLocal);

    [Benchmark(OperationsPerInvoke = ChurnPairs, Description = "64 B churn, switchable (thread-local mode)")]
    [BenchmarkCategory("churn thread-local")]
    public nuint ChurnThreadLocalSwitchable()
    {
        using (_switchable.Use(AllocatorKind.ThreadLocal))
        {
            return Churn(_switchable);
        }
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = ChurnPairs, Description = "64 B churn, context allocator (bump)")]
    [BenchmarkCategory("churn context")]
    public nuint ChurnContextPlain() => Churn(_context);

    [Benchmark(OperationsPerInvoke = ChurnPairs, Description = "64 B churn, switchable (context mode)")]
    [BenchmarkCategory("churn context")]
    public nuint ChurnContextSwitchable()
    {
        using (_switchable.UseContext(_context))
        {
            return Churn(_switchable);
        }
    }

    /// <summary>
    /// The request arena's shape: a thread-safe bump context given by a source, which the switchable
    /// allocator asks before each carve and again after it (reset after each churn: the concurrent
    /// path never rewinds).
    /// </summary>
    [Benchmark(OperationsPerInvoke = ChurnPairs, Description = "64 B churn, switchable (context source, thread-safe bump)")]
    [BenchmarkCategory("churn context")]
    public nuint ChurnContextSourceSwitchable()
    {
        nuint sum;
        using (_switchable.UseContext(_source))
        {
            sum = Churn(_switchable);
        }

        _threadSafeContext.Reset();
        return sum;
    }

    // The seed's bench body: one 80 MB allocation, 1M appends (8 MB written, no growth), one free.
    private static long FillList(IAllocator allocator)
    {
        var list = new NativeWordList(allocator, ListCapacity);
        for (int i = 0; i < ListAppends; i++)
        {
            list.Add(100);
        }

        long last = list.Last;
        list.Dispose();
        return last;
    }

    private sealed class FixedSource(ContextAllocator context) : IContextAllocatorSource
    {
        public ContextAllocator GetContextAllocator() => context;
    }

    private static nuint Churn(IAllocator allocator)
    {
        nuint sum = 0;
        for (int i = 0; i < ChurnPairs; i++)
        {
            byte* block = allocator.Allocate(ChurnSize, Alignment);
            *block = (byte)i;
            sum += (nuint)block;
            allocator.Deallocate(block, ChurnSize, Alignment);
        }

        return sum;
    }

    /// <summary>The seed's <c>Vec&lt;usize&gt;</c>: a growable list of 8-byte values in memory of one allocator.</summary>
    private struct NativeWordList(IAllocator allocator, int capacity) : IDisposable
    {
        private long* _items = (long*)allocator.Allocate((nuint)capacity * sizeof(long), sizeof(long));
        private int _capacity = capacity;
        private int _count;

        public readonly long Last => _items[_count - 1];

        public void Add(long value)
        {
            if (_count == _capacity)
            {
                Grow();
            }

            _items[_count++] = value;
        }

        public void Dispose()
        {
            allocator.Deallocate((byte*)_items, (nuint)_capacity * sizeof(long), sizeof(long));
            _items = null;
            _capacity = 0;
            _count = 0;
        }

        private void Grow()
        {
            int grown = Math.Max(4, _capacity * 2);
            _items = (long*)allocator.Reallocate((byte*)_items, (nuint)_capacity * sizeof(long), (nuint)grown * sizeof(long), sizeof(long));
            _capacity = grown;
        }
    }
}
