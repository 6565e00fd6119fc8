using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;

namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// The two calls that tell the calling thread's CPU: <c>getcpu</c> and <c>sched_getcpu</c>. Each
/// returns 0 with the CPU (and, for getcpu, the node; -1 otherwise), or the errno of its refusal.
/// Tests substitute them to take <see cref="NumaTopology"/> through its fallbacks.
/// </summary>
internal sealed unsafe class CpuQueryCalls(CpuQueryCalls.Call getCpu, CpuQueryCalls.Call schedGetCpu)
{
    /// <summary>Returns 0 with <paramref name="cpu"/> and <paramref name="node"/> (-1 when the call does not give it), or an errno.</summary>
    /// <exception cref="EntryPointNotFoundException">The C library lacks the function.</exception>
    public delegate int Call(out int cpu, out int node);

    /// <summary>The real calls.</summary>
    public static CpuQueryCalls Kernel { get; } = new(KernelGetCpu, KernelSchedGetCpu);

    /// <summary><c>getcpu</c>.</summary>
    public Call GetCpu { get; } = getCpu;

    /// <summary><c>sched_getcpu</c>.</summary>
    public Call SchedGetCpu { get; } = schedGetCpu;

    private static int KernelGetCpu(out int cpu, out int node)
    {
        uint kernelCpu;
        uint kernelNode;
        if (LinuxNuma.GetCpu(&kernelCpu, &kernelNode) != 0)
        {
            cpu = node = -1;
            return Marshal.GetLastPInvokeError();
        }

        cpu = (int)kernelCpu;
        node = (int)kernelNode;
        return 0;
    }

    private static int KernelSchedGetCpu(out int cpu, out int node)
    {
        node = -1;
        cpu = LinuxNuma.SchedGetCpu();
        return cpu >= 0 ? 0 : Marshal.GetLastPInvokeError();
    }
}
