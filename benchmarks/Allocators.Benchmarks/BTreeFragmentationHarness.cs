using System.Diagnostics;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Benchmarks.Peers;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Issue 14's long fragmenting workload, outside BenchmarkDotNet: one allocator per process
/// (<c>benchmarks/run.sh --btree-fragmentation btree|tree|glibc|jemalloc</c>), a million random
/// allocations and frees of log-uniform sizes from 64 B to 64 KiB around a live set of up to 4,096
/// blocks, every operation timed on its own with <see cref="Stopwatch.GetTimestamp"/>.
/// </summary>
/// <remarks>
/// Operations during which the thread was switched out (counted with <c>getrusage</c>) are reported
/// apart: their time is the scheduler's. Prints the mean time per operation over the run and over its last 100,000 operations (the
/// fragmented steady state), the latency percentiles and the maximum of single operations, and the
/// memory left at the end: the growth of the resident set over the bytes live (the same measure for
/// every allocator: every page of every block is written, so resident pages are the pages the
/// allocator handed out or kept), and for <see cref="BTreeAllocator"/> its exact bytes obtained over
/// the bytes live. One process per allocator, so that one allocator's retained memory is not
/// counted to the next. The sequence of sizes and choices is the same for all (seed 14).
/// </remarks>
internal static unsafe class BTreeFragmentationHarness
{
    private const int Operations = 1_000_000;
    private const int SteadyOperations = 100_000;
    private const int MaxLive = 4096;
    private const nuint Alignment = 16;

    public static int Run(string[] args)
    {
        string kind = args.Length > 1 ? args[1] : "btree";
        Subject subject = kind switch
        {
            "btree" => new BTreeSubject(),
            "tree" => new TreeSubject(),
            "glibc" => new GlibcSubject(),
            "jemalloc" => NativePeers.Je is { } je ? new JemallocSubject(je) : throw new InvalidOperationException("jemalloc is not loadable: run through benchmarks/run.sh (GLIBC_TUNABLES) with libjemalloc2 installed."),
            _ => throw new ArgumentException($"Unknown allocator '{kind}': btree, tree, glibc or jemalloc.", nameof(args)),
        };

        var live = new nuint[MaxLive];
        var sizes = new int[MaxLive];
        var ticks = new long[Operations];

        // Whether the thread was switched out during the operation (getrusage before and after,
        // outside the timed part): on a loaded machine a preemption adds a whole time slice to the
        // one operation it lands in, which says nothing about the allocator.
        var switched = new bool[Operations];
        var getrusage = (delegate* unmanaged<int, byte*, int>)NativeLibrary.GetExport(NativeLibrary.Load("libc.so.6"), "getrusage");
        byte* usage = stackalloc byte[256];

        // Warm up the code paths (JIT tiering) on a few blocks before the baseline is taken.
        for (int i = 0; i < 20_000; i++)
        {
            nuint p = subject.Allocate(64 + (nuint)(i % 512));
            subject.Free(p, 64 + (nuint)(i % 512));
        }

        // The measuring arrays are written once first, so that their pages are in the baseline.
        ticks.AsSpan().Fill(1);
        switched.AsSpan().Fill(true);
        long rssBefore = ResidentBytes();
        var random = new Random(14);
        double logMin = Math.Log(64);
        double logMax = Math.Log(64 * 1024);
        int count = 0;
        long liveBytes = 0;
        long peakLive = 0;
        long start = Stopwatch.GetTimestamp();
        for (int op = 0; op < Operations; op++)
        {
            double allocateChance = count < MaxLive / 2 ? 0.75 : count >= MaxLive ? 0 : 0.5;
            bool allocate = count == 0 || random.NextDouble() < allocateChance;
            if (allocate)
            {
                int size = (int)Math.Exp(logMin + (random.NextDouble() * (logMax - logMin)));
                long switches = ContextSwitches(getrusage, usage);
                long before = Stopwatch.GetTimestamp();
                nuint p = subject.Allocate((nuint)size);
                ticks[op] = Stopwatch.GetTimestamp() - before;
                switched[op] = ContextSwitches(getrusage, usage) != switches;
                for (int offset = 0; offset < size; offset += 4096)
                {
                    ((byte*)p)[offset] = 1;
                }

                ((byte*)p)[size - 1] = 1;
                live[count] = p;
                sizes[count++] = size;
                liveBytes += size;
                peakLive = Math.Max(peakLive, liveBytes);
            }
            else
            {
                int index = random.Next(count);
                long switches = ContextSwitches(getrusage, usage);
                long before = Stopwatch.GetTimestamp();
                subject.Free(live[index], (nuint)sizes[index]);
                ticks[op] = Stopwatch.GetTimestamp() - before;
                switched[op] = ContextSwitches(getrusage, usage) != switches;
                liveBytes -= sizes[index];
                live[index] = live[--count];
                sizes[index] = sizes[count];
            }
        }

        double elapsed = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        long rss = ResidentBytes() - rssBefore;
        double nsPerTick = 1e9 / Stopwatch.Frequency;
        double steady = ticks.AsSpan(Operations - SteadyOperations).ToArray().Average() * nsPerTick;
        double mean = ticks.Average() * nsPerTick;
        long[] sorted = [.. ticks.Order()];
        int preempted = switched.Count(s => s);
        long maxRunning = ticks.Where((t, i) => !switched[i]).Max();
        double Percentile(double p) => sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))] * nsPerTick;

        Console.WriteLine($"allocator: {kind}; {Operations:N0} operations in {elapsed:F0} ms (touching included); load average {File.ReadAllText("/proc/loadavg").Trim()}");
        Console.WriteLine($"| allocator | mean ns/op | last 100k ns/op | p50 ns | p99 ns | p99.9 ns | p99.99 ns | max µs | preempted ops | max µs, not preempted | live MiB (peak) | RSS growth ÷ live | obtained ÷ live |");
        Console.WriteLine($"| {kind} | {mean:F0} | {steady:F0} | {Percentile(0.5):F0} | {Percentile(0.99):F0} | {Percentile(0.999):F0} | {Percentile(0.9999):F0} | {sorted[^1] * nsPerTick / 1000:F0} | {preempted:N0} | {maxRunning * nsPerTick / 1000:F1} | {liveBytes / 1048576.0:F1} ({peakLive / 1048576.0:F1}) | {(double)rss / liveBytes:F2} | {subject.ObtainedOverLive(liveBytes)} |");

        for (int i = 0; i < count; i++)
        {
            subject.Free(live[i], (nuint)sizes[i]);
        }

        subject.Close();
        return 0;
    }

    // Voluntary plus involuntary context switches of this thread so far (getrusage(RUSAGE_THREAD):
    // ru_nvcsw and ru_nivcsw, the last two of the 14 longs after two timevals).
    private static long ContextSwitches(delegate* unmanaged<int, byte*, int> getrusage, byte* usage)
    {
        _ = getrusage(1, usage);
        return ((long*)(usage + 32))[12] + ((long*)(usage + 32))[13];
    }

    // The resident set of the process, from /proc/self/statm (pages).
    private static long ResidentBytes()
    {
        string[] fields = File.ReadAllText("/proc/self/statm").Split(' ');
        return long.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture) * Environment.SystemPageSize;
    }

    // One allocator behind one virtual call, the same indirection for all.
    private abstract class Subject
    {
        public abstract nuint Allocate(nuint size);

        public abstract void Free(nuint pointer, nuint size);

        public virtual string ObtainedOverLive(long liveBytes) => "n/a";

        /// <summary>Gives the allocator's memory back (its blocks are freed already).</summary>
        public virtual void Close()
        {
        }
    }

    private sealed class BTreeSubject : Subject
    {
        private readonly BTreeAllocator _allocator = new(MemorySource.CreateDefault());

        public override nuint Allocate(nuint size) => (nuint)_allocator.Allocate(size, Alignment);

        public override void Free(nuint pointer, nuint size) => _allocator.Deallocate((byte*)pointer, size, Alignment);

        public override string ObtainedOverLive(long liveBytes) =>
            $"{(double)_allocator.ObtainedBytes / liveBytes:F2} ({_allocator.RegionBytes >> 20} MiB regions + {_allocator.NodeBytes >> 10} KiB nodes)";

        public override void Close() => _allocator.Dispose();
    }

    private sealed class TreeSubject : Subject
    {
        // A region far larger than the workload needs: mapped lazily, only touched pages are resident.
        private readonly MultipleBinarySearchTreeAllocator _allocator = new(MemorySource.CreateDefault(), 512 << 20);

        public override nuint Allocate(nuint size) => (nuint)_allocator.Allocate(size, Alignment);

        public override void Free(nuint pointer, nuint size) => _allocator.Deallocate((byte*)pointer, size, Alignment);

        public override string ObtainedOverLive(long liveBytes) =>
            $"blocks {(double)_allocator.Statistics.BytesInUse / liveBytes:F2} (a fixed 512 MiB region)";

        public override void Close() => _allocator.Dispose();
    }

    private sealed class GlibcSubject : Subject
    {
        public override nuint Allocate(nuint size) => (nuint)NativeMemory.Alloc(size);

        public override void Free(nuint pointer, nuint size) => NativeMemory.Free((void*)pointer);
    }

    private sealed class JemallocSubject(NativePeers.Jemalloc je) : Subject
    {
        public override nuint Allocate(nuint size) => (nuint)je.MallocNoTransition(size);

        public override void Free(nuint pointer, nuint size) => je.FreeNoTransition((void*)pointer);
    }
}
