using System.Globalization;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;

namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// The machine's NUMA nodes, their CPUs, and the node the calling thread runs on: what a hosting layer
/// needs to give each thread memory on its own node.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Current"/> reads <c>/sys/devices/system/node/node*/cpulist</c> once and asks the kernel
/// which CPU and node a thread is on (<c>getcpu</c>, or <c>sched_getcpu</c> plus the CPU-to-node map).
/// It never fails: on systems other than Linux, when sysfs is missing or unreadable, or when the calls
/// are refused, it describes a single node and says why in <see cref="FallbackReason"/>.
/// </para>
/// <para>
/// <see cref="FromSysfs(string, Func{int})"/> reads any directory laid out like sysfs and takes an optional function
/// returning the current CPU, so the node-choice logic can be exercised with a fake topology.
/// </para>
/// <example><code>
/// var policy = NumaTopology.Current.ForCurrentThread();   // Preferred(this thread's node), or Default on one node
/// var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = policy });
/// </code></example>
/// </remarks>
public sealed class NumaTopology
{
    /// <summary>Where the kernel describes NUMA nodes.</summary>
    public const string SysfsNodeDirectory = "/sys/devices/system/node";

    private static readonly Lazy<NumaTopology> s_current = new(LoadCurrent);

    private readonly Dictionary<int, int> _nodeOfCpu;
    private readonly Func<int>? _currentCpu;

    // Whose getcpu and sched_getcpu answer (the kernel's, or a test's stand-in); null when the kernel is not asked.
    private readonly ILinuxSystemCalls? _kernel;

    // Which call answers: NotProbed until the first query, then the first of getcpu, sched_getcpu that worked, or neither.
    private int _cpuQuery = (int)CpuQueryState.NotProbed;
    private string? _fallbackReason;

    private NumaTopology(IReadOnlyList<NumaNode> nodes, Func<int>? currentCpu, ILinuxSystemCalls? kernel, string? fallbackReason)
    {
        Nodes = nodes;
        _currentCpu = currentCpu;
        _kernel = kernel;
        _fallbackReason = fallbackReason;
        _nodeOfCpu = [];
        foreach (var node in nodes)
        {
            foreach (int cpu in node.Cpus)
            {
                _nodeOfCpu[cpu] = node.Id;
            }
        }
    }

    /// <summary>The topology of this machine, read once.</summary>
    public static NumaTopology Current => s_current.Value;

    /// <summary>The nodes, ascending by id; never empty.</summary>
    public IReadOnlyList<NumaNode> Nodes { get; }

    /// <summary>The number of nodes.</summary>
    public int NodeCount => Nodes.Count;

    /// <summary>Whether there is more than one node, so that placement matters.</summary>
    public bool IsMultiNode => Nodes.Count > 1;

    /// <summary>Why the topology is a single-node stand-in, or why the current node cannot be asked for; null when all is known.</summary>
    public string? FallbackReason => Volatile.Read(ref _fallbackReason);

    /// <summary>The CPU the calling thread runs on now, or -1 when unknown.</summary>
    public int CurrentCpu => _currentCpu is not null ? _currentCpu() : _kernel is not null ? QueryCurrent(_kernel, out _) : -1;

    /// <summary>
    /// The node the calling thread runs on now; the first node when there is only one or the kernel
    /// cannot tell (see <see cref="FallbackReason"/>). Threads migrate: this is a hint, not a binding.
    /// </summary>
    public int CurrentNode => TryGetCurrentNode(out int node) ? node : Nodes[0].Id;

    /// <summary>Reads a sysfs-like directory holding <c>node&lt;N&gt;/cpulist</c> files.</summary>
    /// <param name="nodeDirectory">The directory (normally <see cref="SysfsNodeDirectory"/>).</param>
    /// <param name="currentCpu">Returns the calling thread's CPU id; null asks the kernel (on Linux) when the directory is the real one, otherwise the CPU is unknown.</param>
    /// <returns>The topology, or a single node with <see cref="FallbackReason"/> set when the directory is missing, empty or malformed.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="nodeDirectory"/> is null.</exception>
    public static NumaTopology FromSysfs(string nodeDirectory, Func<int>? currentCpu = null)
    {
        ArgumentNullException.ThrowIfNull(nodeDirectory);
        bool queryKernel = currentCpu is null && OperatingSystem.IsLinux()
            && string.Equals(Path.GetFullPath(nodeDirectory).TrimEnd('/'), SysfsNodeDirectory, StringComparison.Ordinal);
        return queryKernel ? FromSysfs(nodeDirectory, LinuxSystemCalls.Kernel) : Read(nodeDirectory, currentCpu, kernel: null);
    }

    /// <summary>Reads <paramref name="nodeDirectory"/> and asks <paramref name="kernel"/>'s getcpu and sched_getcpu for the current CPU.</summary>
    /// <remarks>The seam through which tests take the CPU query through its fallbacks with stand-in system calls.</remarks>
    internal static NumaTopology FromSysfs(string nodeDirectory, ILinuxSystemCalls kernel) => Read(nodeDirectory, currentCpu: null, kernel);

    private static NumaTopology Read(string nodeDirectory, Func<int>? currentCpu, ILinuxSystemCalls? kernel)
    {
        try
        {
            var nodes = ReadNodes(nodeDirectory);
            if (nodes.Count == 0)
            {
                return SingleNode($"no node<N> directories under {nodeDirectory}", currentCpu);
            }

            return new NumaTopology(nodes, currentCpu, kernel, fallbackReason: null);
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or FormatException)
        {
            return SingleNode($"the NUMA topology could not be read from {nodeDirectory}: {error.Message}", currentCpu);
        }
    }

    /// <summary>The node of <paramref name="cpu"/>, or -1 when the CPU is not listed. With a single node every CPU id belongs to it.</summary>
    public int GetNodeOfCpu(int cpu)
    {
        if (cpu < 0)
        {
            return -1;
        }

        if (_nodeOfCpu.TryGetValue(cpu, out int node))
        {
            return node;
        }

        return Nodes.Count == 1 ? Nodes[0].Id : -1;
    }

    /// <summary>The node the calling thread runs on, when it can be told.</summary>
    /// <returns><see langword="false"/> when the CPU or its node is unknown (then <paramref name="node"/> is -1).</returns>
    public bool TryGetCurrentNode(out int node)
    {
        if (Nodes.Count == 1 && _currentCpu is null)
        {
            node = Nodes[0].Id;
            return true;
        }

        int cpu;
        if (_currentCpu is not null)
        {
            cpu = _currentCpu();
            node = GetNodeOfCpu(cpu);
        }
        else if (_kernel is not null)
        {
            cpu = QueryCurrent(_kernel, out int kernelNode);
            node = kernelNode >= 0 ? kernelNode : GetNodeOfCpu(cpu);
        }
        else
        {
            cpu = -1;
            node = -1;
        }

        if (node >= 0)
        {
            return true;
        }

        Interlocked.CompareExchange(ref _fallbackReason, $"the node of CPU {cpu} is unknown; node {Nodes[0].Id} is assumed", null);
        return false;
    }

    /// <summary>
    /// The policy that keeps a thread's memory on its node: <see cref="NumaPolicy.Preferred(int)"/> of
    /// <see cref="CurrentNode"/> on a multi-node machine, <see cref="NumaPolicy.Default"/> (no system
    /// call per mapping) on one node or when the node is unknown.
    /// </summary>
    public NumaPolicy ForCurrentThread() =>
        IsMultiNode && TryGetCurrentNode(out int node) ? NumaPolicy.Preferred(node) : NumaPolicy.Default;

    /// <summary>The nodes, one per line.</summary>
    public override string ToString() => string.Join(Environment.NewLine, Nodes);

    /// <summary>Parses a kernel CPU list such as <c>0-3,8-11</c> (empty for none) into ascending CPU ids.</summary>
    /// <exception cref="FormatException">The text is not a CPU list.</exception>
    internal static List<int> ParseCpuList(string text)
    {
        var cpus = new SortedSet<int>();
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int dash = part.IndexOf('-', StringComparison.Ordinal);
            int first = ParseCpu(dash < 0 ? part : part[..dash], text);
            int last = dash < 0 ? first : ParseCpu(part[(dash + 1)..], text);
            if (last < first)
            {
                throw new FormatException($"The CPU range '{part}' in '{text}' runs backwards.");
            }

            for (int cpu = first; cpu <= last; cpu++)
            {
                cpus.Add(cpu);
            }
        }

        return [.. cpus];
    }

    private static int ParseCpu(string value, string text) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int cpu) && cpu <= 1 << 20
            ? cpu
            : throw new FormatException($"'{text}' is not a CPU list (such as 0-3,8-11).");

    private static List<NumaNode> ReadNodes(string nodeDirectory)
    {
        var nodes = new List<NumaNode>();
        if (!Directory.Exists(nodeDirectory))
        {
            return nodes;
        }

        foreach (string directory in Directory.EnumerateDirectories(nodeDirectory, "node*"))
        {
            string name = Path.GetFileName(directory);
            if (!int.TryParse(name.AsSpan(4), NumberStyles.None, CultureInfo.InvariantCulture, out int id) || id > NumaNodeSet.MaximumNodeId)
            {
                continue;
            }

            string cpuList = Path.Combine(directory, "cpulist");
            var cpus = File.Exists(cpuList) ? ParseCpuList(File.ReadAllText(cpuList)) : [];
            nodes.Add(new NumaNode(id, cpus));
        }

        nodes.Sort(static (a, b) => a.Id.CompareTo(b.Id));
        return nodes;
    }

    private static NumaTopology SingleNode(string reason, Func<int>? currentCpu)
    {
        int cpuCount = Environment.ProcessorCount;
        var cpus = new int[cpuCount];
        for (int i = 0; i < cpuCount; i++)
        {
            cpus[i] = i;
        }

        return new NumaTopology([new NumaNode(0, cpus)], currentCpu, kernel: null, reason);
    }

    private static NumaTopology LoadCurrent() =>
        OperatingSystem.IsLinux()
            ? FromSysfs(SysfsNodeDirectory)
            : SingleNode($"NUMA topology is read on Linux only; this is {RuntimeInformation.OSDescription}", currentCpu: null);

    // The calling thread's CPU (and node when getcpu gives it), or -1. The first query probes
    // getcpu, then sched_getcpu; the first that works answers every later query, and when neither
    // does no call is made again.
    private unsafe int QueryCurrent(ILinuxSystemCalls kernel, out int node)
    {
        node = -1;
        var query = (CpuQueryState)Volatile.Read(ref _cpuQuery);
        string? getCpuFailure = null;
        if (query is CpuQueryState.NotProbed or CpuQueryState.GetCpu)
        {
            try
            {
                uint cpu;
                uint kernelNode;
                if (kernel.GetCpu(&cpu, &kernelNode) == 0)
                {
                    Volatile.Write(ref _cpuQuery, (int)CpuQueryState.GetCpu);
                    node = (int)kernelNode;
                    return (int)cpu;
                }

                getCpuFailure = LinuxErrors.Describe("getcpu", Marshal.GetLastPInvokeError());
            }
            catch (EntryPointNotFoundException)
            {
                // C libraries older than glibc 2.29 have no getcpu wrapper.
                getCpuFailure = "the C library has no getcpu";
            }

            Volatile.Write(ref _cpuQuery, (int)CpuQueryState.SchedGetCpu);
            query = CpuQueryState.SchedGetCpu;
        }

        if (query == CpuQueryState.SchedGetCpu)
        {
            int cpu = kernel.SchedGetCpu();
            if (cpu >= 0)
            {
                return cpu;
            }

            // Only when neither call works is anything unknown: the reason names both refusals.
            string failure = LinuxErrors.Describe("sched_getcpu", Marshal.GetLastPInvokeError());
            Interlocked.CompareExchange(
                ref _fallbackReason,
                $"the current CPU cannot be asked for: {(getCpuFailure is null ? failure : $"{getCpuFailure}; {failure}")}",
                null);
            Volatile.Write(ref _cpuQuery, (int)CpuQueryState.Neither);
        }

        return -1;
    }
}
