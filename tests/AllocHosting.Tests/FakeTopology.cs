using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Tests;

/// <summary>NUMA topologies of machines the tests do not run on, read from sysfs-like directories the tests write.</summary>
internal static class FakeTopology
{
    /// <summary>A topology under a new directory in <paramref name="root"/> with one node per CPU list (empty: a memory-only node), ids from 0.</summary>
    public static NumaTopology Create(string root, params string[] cpuLists)
    {
        string directory = Path.Combine(root, Guid.NewGuid().ToString("N"));
        for (int node = 0; node < cpuLists.Length; node++)
        {
            Directory.CreateDirectory(Path.Combine(directory, $"node{node}"));
            File.WriteAllText(Path.Combine(directory, $"node{node}", "cpulist"), cpuLists[node] + "\n");
        }

        NumaTopology topology = NumaTopology.FromSysfs(directory, () => 0);
        Assert.Equal(cpuLists.Length, topology.NodeCount);
        return topology;
    }
}
