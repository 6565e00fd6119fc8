using AllocHosting.Allocators.MemorySources;
using BenchmarkDotNet.Attributes;
using CommunityToolkit.HighPerformance.Buffers;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Issue 13 part 3: appending 1, 100, 10 000 and 1 000 000 ints one by one to a new list, then
/// disposing it. List&lt;int&gt; (the baseline) and CommunityToolkit's ArrayPoolBufferWriter&lt;int&gt;
/// against NativeList&lt;int&gt; per allocator, with in-place growth on and off, so that the value of
/// in-place growth is the ratio of each pair of rows (excess is used by both rows of a pair).
/// </summary>
[MemoryDiagnoser]
public class NativeListBenchmarks
{
    private ExternalNativeAllocator? _mimalloc;
    private ExternalNativeAllocator? _jemalloc;
    private MultipleBinarySearchTreeAllocator _tree = null!;
    private ThreadLocalAllocator _threadLocal = null!;
    private ContextAllocator _context = null!;

    [Params(1, 100, 10_000, 1_000_000)]
    public int Count { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        // Null where the library is missing: its rows then measure nothing (and say 0).
        ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Mimalloc, out _mimalloc);
        ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Jemalloc, out _jemalloc);

        // 32 MiB: room for the 4 MiB block of a million ints beside the 2 MiB one it moves from.
        _tree = new MultipleBinarySearchTreeAllocator(NativeMemorySource.Shared, 32 << 20);
        _threadLocal = new ThreadLocalAllocator();

        // As a request arena's chunk: a thread-safe bump context, reset after each list. 16 MiB: a million
        // ints grow by moving (no block is ever "most recent" on the concurrent path), 8 MiB in all.
        _context = ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, 16 << 20), threadSafe: true);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _tree.Dispose();
        _threadLocal.Dispose();
        _context.Dispose();
    }

    [Benchmark(Baseline = true, Description = "List<int>")]
    public int List()
    {
        var list = new List<int>();
        for (int i = 0; i < Count; i++)
        {
            list.Add(i);
        }

        return list.Count;
    }

    [Benchmark(Description = "ArrayPoolBufferWriter<int>")]
    public int BufferWriter()
    {
        using var writer = new ArrayPoolBufferWriter<int>();
        for (int i = 0; i < Count; i++)
        {
            writer.GetSpan(1)[0] = i;
            writer.Advance(1);
        }

        return writer.WrittenCount;
    }

    [Benchmark(Description = "NativeList, native (glibc)")]
    public int Native() => Fill(NativeMemoryAllocator.Shared, growInPlace: true);

    [Benchmark(Description = "NativeList, native (glibc), no in-place")]
    public int NativeNoInPlace() => Fill(NativeMemoryAllocator.Shared, growInPlace: false);

    [Benchmark(Description = "NativeList, mimalloc")]
    public int Mimalloc() => Fill(_mimalloc, growInPlace: true);

    [Benchmark(Description = "NativeList, mimalloc, no in-place")]
    public int MimallocNoInPlace() => Fill(_mimalloc, growInPlace: false);

    [Benchmark(Description = "NativeList, jemalloc")]
    public int Jemalloc() => Fill(_jemalloc, growInPlace: true);

    [Benchmark(Description = "NativeList, jemalloc, no in-place")]
    public int JemallocNoInPlace() => Fill(_jemalloc, growInPlace: false);

    [Benchmark(Description = "NativeList, tree")]
    public int Tree() => Fill(_tree, growInPlace: true);

    [Benchmark(Description = "NativeList, tree, no in-place")]
    public int TreeNoInPlace() => Fill(_tree, growInPlace: false);

    [Benchmark(Description = "NativeList, thread-local")]
    public int ThreadLocal() => Fill(_threadLocal, growInPlace: true);

    [Benchmark(Description = "NativeList, thread-local, no in-place")]
    public int ThreadLocalNoInPlace() => Fill(_threadLocal, growInPlace: false);

    [Benchmark(Description = "NativeList, context (bump, as in a request)")]
    public int Context()
    {
        int count = Fill(_context, growInPlace: true);
        _context.Reset();
        return count;
    }

    private int Fill(IAllocator? allocator, bool growInPlace)
    {
        if (allocator is null)
        {
            return 0;
        }

        using var list = new NativeList<int>(allocator, growInPlace: growInPlace);
        for (int i = 0; i < Count; i++)
        {
            list.Add(i);
        }

        return list.Count;
    }
}
