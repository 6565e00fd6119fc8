using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// A fake two-node machine for <see cref="NumaHeapAllocator"/> tests: a sysfs-like directory with
/// node 0 (CPU 0) and node 1 (CPU 1), a per-thread "current CPU" the test sets, and system calls that
/// refuse <c>mbind</c> with ENOSYS, so that the heaps' sources keep their policies (Bind to node 0
/// or 1) but map plain memory on this single-node host.
/// </summary>
internal sealed unsafe class NumaHeapTestMachine : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "numaheap-" + Guid.NewGuid().ToString("N"));
    private readonly ThreadLocal<int> _cpu = new(() => 0);

    public NumaHeapTestMachine()
    {
        for (int node = 0; node < 2; node++)
        {
            Directory.CreateDirectory(Path.Combine(_root, $"node{node}"));
            File.WriteAllText(Path.Combine(_root, $"node{node}", "cpulist"), $"{node}\n");
        }

        Topology = NumaTopology.FromSysfs(_root, () => _cpu.Value);
    }

    public NumaTopology Topology { get; }

    /// <summary>The CPU (and so the node) the calling thread is said to run on.</summary>
    public int CurrentCpu
    {
        get => _cpu.Value;
        set => _cpu.Value = value;
    }

    /// <summary>An allocator over the fake machine, with small segments.</summary>
    public NumaHeapAllocator CreateAllocator(int heapsPerNode = 1) => new(
        new NumaHeapAllocatorOptions
        {
            Topology = Topology,
            HeapsPerNode = heapsPerNode,
            SegmentSize = NumaHeapAllocatorOptions.MinimumSegmentSize,
            MaximumHeapBlockSize = 64 * 1024,
        },
        new FakeLinuxSystemCalls { Refuse = call => call == "mbind" ? 38 : 0 });

    public void Dispose()
    {
        _cpu.Dispose();
        Directory.Delete(_root, recursive: true);
    }
}
