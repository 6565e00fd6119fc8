using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Interop;

/// <summary>
/// The NUMA system calls, declared once: <c>mbind</c> and <c>get_mempolicy</c> through libc's
/// <c>syscall</c> (glibc has no wrappers for them), and <c>getcpu</c> / <c>sched_getcpu</c>.
/// </summary>
/// <remarks>
/// <c>syscall</c> is variadic in C, but glibc and musl implement it by moving integer registers, so a
/// fixed signature of 64-bit integers is sound on x86-64 and arm64 Linux. The syscall numbers
/// differ per architecture (W-NU3: the seed hard-coded an x86-64 instruction); on any other
/// architecture <see cref="IsSupported"/> is false and the NUMA calls report ENOSYS.
/// </remarks>
internal static unsafe partial class LinuxNuma
{
    private const string LibC = "libc";

    private static readonly (long Mbind, long GetMempolicy) s_numbers = RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => (237, 239),
        Architecture.Arm64 => (235, 236),
        _ => (-1, -1),
    };

    /// <summary>Whether the NUMA system-call numbers are known for this process (Linux on x86-64 or arm64).</summary>
    public static bool IsSupported => OperatingSystem.IsLinux() && s_numbers.Mbind >= 0;

    /// <summary>
    /// <c>mbind(addr, len, mode, nodemask, maxnode, flags)</c>. Returns 0, or -1 with the last
    /// P/Invoke error set (ENOSYS when the architecture is not supported).
    /// </summary>
    public static int Mbind(nint address, nuint length, int mode, ulong* nodeMask, ulong maxNode, uint flags)
    {
        if (!IsSupported)
        {
            Marshal.SetLastPInvokeError(LinuxConstants.ENOSYS);
            return -1;
        }

        return (int)Syscall(s_numbers.Mbind, address, (long)length, mode, (long)nodeMask, (long)maxNode, flags);
    }

    /// <summary>
    /// <c>get_mempolicy(int* mode, ulong* nodemask, ulong maxnode, void* addr, ulong flags)</c>.
    /// Returns 0, or -1 with the last P/Invoke error set.
    /// </summary>
    public static int GetMempolicy(int* mode, ulong* nodeMask, ulong maxNode, nint address, ulong flags)
    {
        if (!IsSupported)
        {
            Marshal.SetLastPInvokeError(LinuxConstants.ENOSYS);
            return -1;
        }

        return (int)Syscall(s_numbers.GetMempolicy, (long)mode, (long)nodeMask, (long)maxNode, address, (long)flags, 0);
    }

    /// <summary><c>int getcpu(unsigned* cpu, unsigned* node)</c> (glibc 2.29 and later); 0 or -1.</summary>
    /// <exception cref="EntryPointNotFoundException">The C library has no <c>getcpu</c>.</exception>
    [LibraryImport(LibC, EntryPoint = "getcpu", SetLastError = true)]
    public static partial int GetCpu(uint* cpu, uint* node);

    /// <summary><c>int sched_getcpu(void)</c>: the CPU the calling thread runs on, or -1.</summary>
    [LibraryImport(LibC, EntryPoint = "sched_getcpu", SetLastError = true)]
    public static partial int SchedGetCpu();

    [LibraryImport(LibC, EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, long argument1, long argument2, long argument3, long argument4, long argument5, long argument6);
}
