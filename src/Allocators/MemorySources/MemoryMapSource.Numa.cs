using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;
using static AllocHosting.Allocators.Interop.LinuxConstants;

namespace AllocHosting.Allocators.MemorySources;

// NUMA placement: applying the policy to each region (mbind), degrading when the kernel refuses it,
// attributing mapped bytes to nodes, and asking the kernel where an address lives.
public sealed unsafe partial class MemoryMapSource
{
    // Bytes mapped by every source of the process, keyed by the node they are attributed to (-1: unknown).
    private static readonly ConcurrentDictionary<int, StrongBox<long>> s_processMappedByNode = new();

    /// <summary>
    /// The NUMA node this source's bytes are attributed to: the node of a <c>Preferred</c> or
    /// <c>Bind</c> policy naming one node while the policy applies, otherwise -1 (unknown).
    /// </summary>
    /// <remarks>It turns to -1 when the kernel refuses the policy, which happens on the first mapping, before any bytes are attributed.</remarks>
    public int MappedNode => NumaPolicyApplied ? Options.NumaPolicy.SingleNode ?? -1 : -1;

    /// <summary>Whether the NUMA policy is being applied (false once the kernel refused it; true for the default policy).</summary>
    public bool NumaPolicyApplied => Volatile.Read(ref _numaRefused) == 0;

    /// <summary>Bytes this source has mapped now, by NUMA node (-1: node unknown). One entry per node.</summary>
    public IReadOnlyDictionary<int, long> GetMappedBytesByNode() =>
        new Dictionary<int, long> { [MappedNode] = MappedBytes };

    /// <summary>
    /// Bytes mapped now by every <see cref="MemoryMapSource"/> of the process, by NUMA node (-1: node
    /// unknown): the figure behind the <c>allochosting.mapped</c> metric.
    /// </summary>
    public static IReadOnlyDictionary<int, long> GetProcessMappedBytesByNode()
    {
        var snapshot = new Dictionary<int, long>();
        foreach (var (node, bytes) in s_processMappedByNode)
        {
            snapshot[node] = Interlocked.Read(ref bytes.Value);
        }

        return snapshot;
    }

    /// <summary>
    /// The NUMA node of the page backing <paramref name="address"/>
    /// (<c>get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)</c>, which faults the page in if needed), or null
    /// when the kernel cannot tell (not Linux, NUMA calls refused, address not mapped).
    /// </summary>
    public static int? GetNodeOfAddress(void* address)
    {
        if (!LinuxNuma.IsSupported)
        {
            return null;
        }

        int node;
        return LinuxSystemCalls.Kernel.GetMempolicy(&node, null, 0, (nint)address, MPOL_F_NODE | MPOL_F_ADDR) == 0 ? node : null;
    }

    /// <summary>
    /// The NUMA policy the kernel holds for the range containing <paramref name="address"/>
    /// (<c>get_mempolicy(MPOL_F_ADDR)</c>), or null when it cannot tell.
    /// </summary>
    public static NumaPolicy? GetPolicyOfAddress(void* address)
    {
        if (!LinuxNuma.IsSupported)
        {
            return null;
        }

        // The kernel insists on maxnode >= its node count; 4096 bits covers every configuration.
        const int Words = 64;
        ulong* mask = stackalloc ulong[Words];
        int mode;
        if (LinuxSystemCalls.Kernel.GetMempolicy(&mode, mask, (64 * Words) + 1, (nint)address, MPOL_F_ADDR) != 0)
        {
            return null;
        }

        var set = NumaNodeSet.FromMask(new ReadOnlySpan<ulong>(mask, Words)).WithNodeIdMeaning(
            (mode & MPOL_F_STATIC_NODES) != 0, (mode & MPOL_F_RELATIVE_NODES) != 0);
        return NumaPolicy.FromKernel((NumaPolicyMode)(mode & ~MPOL_MODE_FLAGS), set);
    }

    /// <summary>The <c>flags</c> argument of <c>mbind</c>.</summary>
    internal static uint ComputeMbindFlags(MemoryMapSourceOptions options) =>
        options.StrictNumaPolicy ? MPOL_MF_STRICT | MPOL_MF_MOVE : 0;

    private string? ApplyNumaPolicy(byte* start, nuint size)
    {
        NumaPolicy policy = Options.NumaPolicy;
        if (policy.Mode == NumaPolicyMode.Default || Volatile.Read(ref _numaRefused) != 0)
        {
            return null;
        }

        ReadOnlySpan<ulong> words = policy.Nodes.MaskWords;
        int result;
        fixed (ulong* mask = words)
        {
            result = _kernel.Mbind((nint)start, size, policy.KernelMode, words.IsEmpty ? null : mask, policy.Nodes.MaxNode, _mbindFlags);
        }

        if (result == 0)
        {
            return null;
        }

        int errno = Marshal.GetLastPInvokeError();
        if (errno is ENOSYS or EPERM)
        {
            _processMapped = ProcessCounter(-1);
            DegradeOnce(ref _numaRefused, ref _numaFallbackReason,
                $"the NUMA policy {policy} is not applied: {LinuxErrors.Describe("mbind", errno)}");
            return null;
        }

        return LinuxErrors.Describe($"mbind({policy})", errno);
    }

    private void AccountMapped(long delta)
    {
        Interlocked.Add(ref _mappedBytes, delta);
        Interlocked.Add(ref _processMapped.Value, delta);
    }

    private static StrongBox<long> ProcessCounter(int node) =>
        s_processMappedByNode.GetOrAdd(node, static _ => new StrongBox<long>());
}
