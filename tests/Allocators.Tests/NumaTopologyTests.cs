using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

public sealed class NumaTopologyTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "numa-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    [Theory]
    [InlineData("0-3,8-11", new[] { 0, 1, 2, 3, 8, 9, 10, 11 })]
    [InlineData("5\n", new[] { 5 })]
    [InlineData("0,2-3", new[] { 0, 2, 3 })]
    [InlineData("\n", new int[0])]
    [InlineData("", new int[0])]
    public void Cpu_lists_are_parsed_with_ranges(string text, int[] expected) =>
        Assert.Equal(expected, NumaTopology.ParseCpuList(text));

    [Theory]
    [InlineData("a-b")]
    [InlineData("3-1")]
    [InlineData("-1")]
    public void Malformed_cpu_lists_are_rejected(string text) =>
        Assert.Throws<FormatException>(() => NumaTopology.ParseCpuList(text));

    [Fact]
    public void Fake_sysfs_with_four_nodes_is_parsed()
    {
        WriteFakeSysfs();

        var topology = NumaTopology.FromSysfs(_root, () => 0);

        Assert.Null(topology.FallbackReason);
        Assert.True(topology.IsMultiNode);
        Assert.Equal(4, topology.NodeCount);
        Assert.Equal([0, 1, 2, 3], topology.Nodes.Select(n => n.Id));
        Assert.Equal([4, 5, 12], topology.Nodes[2].Cpus);
        Assert.Empty(topology.Nodes[3].Cpus);
        Assert.Equal(0, topology.GetNodeOfCpu(1));
        Assert.Equal(1, topology.GetNodeOfCpu(3));
        Assert.Equal(2, topology.GetNodeOfCpu(12));
        Assert.Equal(-1, topology.GetNodeOfCpu(99));
        Assert.Equal(-1, topology.GetNodeOfCpu(-1));
    }

    [Fact]
    public void Current_node_follows_the_cpu_the_thread_runs_on()
    {
        WriteFakeSysfs();
        int cpu = 4;
        var topology = NumaTopology.FromSysfs(_root, () => cpu);

        Assert.Equal(4, topology.CurrentCpu);
        Assert.Equal(2, topology.CurrentNode);
        Assert.Equal(NumaPolicy.Preferred(2), topology.ForCurrentThread());

        cpu = 2;
        Assert.Equal(1, topology.CurrentNode);
        Assert.Equal(NumaPolicy.Preferred(1), topology.ForCurrentThread());
        Assert.Null(topology.FallbackReason);
    }

    [Fact]
    public void Unknown_cpu_falls_back_to_the_first_node_and_says_why()
    {
        WriteFakeSysfs();
        var topology = NumaTopology.FromSysfs(_root, () => 42);

        Assert.False(topology.TryGetCurrentNode(out int node));
        Assert.Equal(-1, node);
        Assert.Equal(0, topology.CurrentNode);
        Assert.Equal(NumaPolicy.Default, topology.ForCurrentThread());
        Assert.Contains("CPU 42", topology.FallbackReason, StringComparison.Ordinal);
    }

    [Fact]
    public void Missing_directory_gives_a_single_node_fallback()
    {
        var topology = NumaTopology.FromSysfs(Path.Combine(_root, "absent"));

        Assert.Equal(1, topology.NodeCount);
        Assert.False(topology.IsMultiNode);
        Assert.Equal(0, topology.Nodes[0].Id);
        Assert.Equal(Environment.ProcessorCount, topology.Nodes[0].Cpus.Count);
        Assert.Contains("absent", topology.FallbackReason, StringComparison.Ordinal);
        Assert.Equal(0, topology.CurrentNode);
        Assert.Equal(0, topology.GetNodeOfCpu(12345));
        Assert.Equal(NumaPolicy.Default, topology.ForCurrentThread());
    }

    [Fact]
    public void Malformed_cpulist_gives_a_single_node_fallback()
    {
        Directory.CreateDirectory(Path.Combine(_root, "node0"));
        File.WriteAllText(Path.Combine(_root, "node0", "cpulist"), "zero-one\n");

        var topology = NumaTopology.FromSysfs(_root);

        Assert.Equal(1, topology.NodeCount);
        Assert.Contains("could not be read", topology.FallbackReason, StringComparison.Ordinal);
    }

    [Fact]
    public void Sparse_node_ids_are_sorted()
    {
        foreach (var (id, cpus) in new[] { (2, "2-3"), (0, "0-1") })
        {
            Directory.CreateDirectory(Path.Combine(_root, $"node{id}"));
            File.WriteAllText(Path.Combine(_root, $"node{id}", "cpulist"), cpus + "\n");
        }

        var topology = NumaTopology.FromSysfs(_root, () => 3);

        Assert.Equal([0, 2], topology.Nodes.Select(n => n.Id));
        Assert.Equal(2, topology.CurrentNode);
    }

    [LinuxFact]
    public void Current_topology_of_this_machine_names_the_thread_node()
    {
        var topology = NumaTopology.Current;

        Assert.NotEmpty(topology.Nodes);
        Assert.Contains(topology.CurrentNode, topology.Nodes.Select(n => n.Id));
        Assert.True(topology.CurrentCpu >= 0, topology.FallbackReason);
        Assert.True(topology.TryGetCurrentNode(out int node));
        Assert.Equal(node, topology.GetNodeOfCpu(topology.CurrentCpu));
        if (!topology.IsMultiNode)
        {
            Assert.Equal(NumaPolicy.Default, topology.ForCurrentThread());
        }
    }

    [Fact]
    public void Getcpu_gives_the_node_and_sched_getcpu_is_never_asked()
    {
        WriteSparseTwoNodeSysfs();
        (int Cpu, int Node) answer = (2, 3);
        var calls = new FakeLinuxSystemCalls { GetCpuAnswer = () => (0, answer.Cpu, answer.Node), SchedGetCpuAnswer = () => (0, 0) };
        var topology = NumaTopology.FromSysfs(_root, calls);
        Assert.Equal(0, calls.GetCpuCount + calls.SchedGetCpuCount); // nothing is probed before the first question

        Assert.Equal(3, topology.CurrentNode);
        Assert.Equal(2, topology.CurrentCpu);
        Assert.Equal(NumaPolicy.Preferred(3), topology.ForCurrentThread());

        // The kernel's node is taken as it is, not looked up from the CPU.
        answer = (0, 3);
        Assert.True(topology.TryGetCurrentNode(out int node));
        Assert.Equal(3, node);
        Assert.Equal(4, calls.GetCpuCount);
        Assert.Equal(0, calls.SchedGetCpuCount);
        Assert.Null(topology.FallbackReason);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Refused_getcpu_falls_back_to_sched_getcpu_and_the_cpu_map(bool missingFromLibc)
    {
        // getcpu is refused (ENOSYS) or, before glibc 2.29, absent; sched_getcpu tells the CPU and sysfs its node.
        WriteSparseTwoNodeSysfs();
        int cpu = 3;
        var calls = new FakeLinuxSystemCalls
        {
            GetCpuAnswer = () => missingFromLibc ? throw new EntryPointNotFoundException("getcpu") : (38, -1, -1),
            SchedGetCpuAnswer = () => (0, cpu),
        };
        var topology = NumaTopology.FromSysfs(_root, calls);

        Assert.Equal(3, topology.CurrentNode);
        Assert.Equal((1, 1), (calls.GetCpuCount, calls.SchedGetCpuCount)); // getcpu refused, sched_getcpu answered
        cpu = 0;
        Assert.Equal(1, topology.CurrentNode);
        Assert.Equal(0, topology.CurrentCpu);
        Assert.Equal(NumaPolicy.Preferred(1), topology.ForCurrentThread());
        Assert.Equal(1, calls.GetCpuCount); // probed once, never asked again
        Assert.Equal(4, calls.SchedGetCpuCount);
        Assert.Null(topology.FallbackReason); // the node is known: nothing is missing

        cpu = 9;
        Assert.False(topology.TryGetCurrentNode(out int node));
        Assert.Equal(-1, node);
        Assert.Equal(1, topology.CurrentNode);
        Assert.Contains("CPU 9", topology.FallbackReason, StringComparison.Ordinal);
    }

    [Fact]
    public void Both_calls_refused_give_the_first_node_and_say_so_once()
    {
        WriteSparseTwoNodeSysfs();
        var calls = new FakeLinuxSystemCalls { GetCpuAnswer = () => (38, -1, -1), SchedGetCpuAnswer = () => (38, -1) };
        var topology = NumaTopology.FromSysfs(_root, calls);

        Assert.Equal(1, topology.CurrentNode); // the first node, whose id is not 0 here
        string? reason = topology.FallbackReason;
        Assert.StartsWith("the current CPU cannot be asked for", reason, StringComparison.Ordinal);
        Assert.Contains("getcpu failed with ENOSYS (38)", reason, StringComparison.Ordinal);
        Assert.Contains("sched_getcpu failed with ENOSYS (38)", reason, StringComparison.Ordinal);
        Assert.Equal((1, 1), (calls.GetCpuCount, calls.SchedGetCpuCount)); // both probed once

        Assert.False(topology.TryGetCurrentNode(out int node));
        Assert.Equal(-1, node);
        Assert.Equal(-1, topology.CurrentCpu);
        Assert.Equal(NumaPolicy.Default, topology.ForCurrentThread());
        Assert.Equal(1, topology.CurrentNode);
        Assert.Same(reason, topology.FallbackReason);
        Assert.Equal(1, calls.GetCpuCount); // neither call is made again
        Assert.Equal(1, calls.SchedGetCpuCount);
    }

    [Fact]
    public void Each_topology_probes_the_kernel_calls_for_itself()
    {
        WriteSparseTwoNodeSysfs();
        var refused = NumaTopology.FromSysfs(_root, new FakeLinuxSystemCalls { GetCpuAnswer = () => (38, -1, -1), SchedGetCpuAnswer = () => (38, -1) });
        var working = new FakeLinuxSystemCalls { GetCpuAnswer = () => (0, 2, 3), SchedGetCpuAnswer = () => (0, 0) };
        var answering = NumaTopology.FromSysfs(_root, working);

        Assert.Equal(1, refused.CurrentNode);
        Assert.Equal(3, answering.CurrentNode);
        Assert.Equal((1, 0), (working.GetCpuCount, working.SchedGetCpuCount)); // getcpu answered
        Assert.Null(answering.FallbackReason);
    }

    [Fact]
    public void One_node_needs_no_kernel_call_for_the_current_node()
    {
        Directory.CreateDirectory(Path.Combine(_root, "node0"));
        File.WriteAllText(Path.Combine(_root, "node0", "cpulist"), "0-1\n");
        var calls = new FakeLinuxSystemCalls { GetCpuAnswer = () => (0, 1, 0), SchedGetCpuAnswer = () => (0, 1) };
        var topology = NumaTopology.FromSysfs(_root, calls);

        Assert.Equal(0, topology.CurrentNode);
        Assert.Equal(NumaPolicy.Default, topology.ForCurrentThread());
        Assert.Equal(0, calls.GetCpuCount + calls.SchedGetCpuCount);
        Assert.Equal(1, topology.CurrentCpu);
        Assert.Equal(1, calls.GetCpuCount);
    }

    [LinuxFact]
    public void This_machine_answers_with_getcpu()
    {
        var topology = NumaTopology.FromSysfs(NumaTopology.SysfsNodeDirectory);
        var calls = new FakeLinuxSystemCalls();
        var counted = NumaTopology.FromSysfs(NumaTopology.SysfsNodeDirectory, calls);

        Assert.True(topology.CurrentCpu >= 0, topology.FallbackReason);
        Assert.True(counted.CurrentCpu >= 0, counted.FallbackReason);
        Assert.Equal((1, 0), (calls.GetCpuCount, calls.SchedGetCpuCount)); // the kernel's getcpu answered
    }

    private void WriteFakeSysfs()
    {
        // A layout like /sys/devices/system/node: node directories plus files and folders that are not nodes.
        string[] cpuLists = ["0-1\n", "2-3\n", "4-5,12\n", "\n"];
        for (int node = 0; node < cpuLists.Length; node++)
        {
            string directory = Path.Combine(_root, $"node{node}");
            Directory.CreateDirectory(directory);
            File.WriteAllText(Path.Combine(directory, "cpulist"), cpuLists[node]);
        }

        File.WriteAllText(Path.Combine(_root, "online"), "0-3\n");
        File.WriteAllText(Path.Combine(_root, "possible"), "0-3\n");
        Directory.CreateDirectory(Path.Combine(_root, "power"));
    }

    // Two nodes whose ids are not 0 and 1, so that "the first node" is not node 0: node1 has CPUs 0-1, node3 CPUs 2-3.
    private void WriteSparseTwoNodeSysfs()
    {
        foreach (var (id, cpus) in new[] { (1, "0-1"), (3, "2-3") })
        {
            Directory.CreateDirectory(Path.Combine(_root, $"node{id}"));
            File.WriteAllText(Path.Combine(_root, $"node{id}", "cpulist"), cpus + "\n");
        }
    }
}
