using System.Globalization;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Stand-in system calls: each call is offered to <see cref="Refuse"/> under its name (such as
/// <c>"mmap"</c>, <c>"madvise(MADV_HUGEPAGE)"</c>, <c>"mbind"</c>, <c>"mlock"</c>); a non-zero answer
/// fails the call with that errno without making it, zero makes the real call. <c>getcpu</c> and
/// <c>sched_getcpu</c> can be answered by <see cref="GetCpu"/> and <see cref="SchedGetCpu"/> instead,
/// and are counted. Lets the degradation paths run on machines whose kernel never refuses (one
/// node, CAP_IPC_LOCK, a kernel that knows every advice).
/// </summary>
internal sealed unsafe class FakeLinuxSystemCalls : ILinuxSystemCalls
{
    private long _liveMappedBytes;

    /// <summary>Given a call's name, an errno to fail it with, or 0 to make the real call; null makes every call.</summary>
    public Func<string, int>? Refuse { get; set; }

    /// <summary>Answers getcpu with (errno, cpu, node) instead of the kernel; may throw <see cref="EntryPointNotFoundException"/>.</summary>
    public Func<(int Errno, int Cpu, int Node)>? GetCpuAnswer { get; init; }

    /// <summary>Answers sched_getcpu with (errno, cpu) instead of the kernel.</summary>
    public Func<(int Errno, int Cpu)>? SchedGetCpuAnswer { get; init; }

    public int GetCpuCount { get; private set; }

    /// <summary>Every mprotect call in order (address, length, protection), made or refused.</summary>
    public List<(nint Address, nuint Length, int Protection)> ProtectCalls { get; } = [];

    /// <summary>
    /// Bytes mapped through this stand-in and not unmapped: every successful <c>mmap</c> adds its
    /// length, every successful <c>munmap</c> subtracts its own, every successful <c>mremap</c> the
    /// difference. Zero once everything mapped was given back: the leak check of the fault tests.
    /// </summary>
    public long LiveMappedBytes => Interlocked.Read(ref _liveMappedBytes);

    /// <summary>Refuses only the <paramref name="nth"/> call named <paramref name="call"/> from now on (1 for the next one) with <paramref name="errno"/>; every other call is made.</summary>
    public void RefuseAt(string call, int nth, int errno)
    {
        int seen = 0;
        Refuse = name => name == call && Interlocked.Increment(ref seen) == nth ? errno : 0;
    }

    public int SchedGetCpuCount { get; private set; }

    // The name a call is offered to Refuse under.
    public static string AdviceName(int advice) => advice switch
    {
        14 => "madvise(MADV_HUGEPAGE)",
        16 => "madvise(MADV_DONTDUMP)",
        23 => "madvise(MADV_POPULATE_WRITE)",
        _ => $"madvise({advice.ToString(CultureInfo.InvariantCulture)})",
    };

    public nint Map(nint address, nuint length, int protection, int flags, int fileDescriptor, nint offset)
    {
        if (Refused("mmap"))
        {
            return LinuxConstants.MAP_FAILED;
        }

        nint mapped = LinuxSystemCalls.Kernel.Map(address, length, protection, flags, fileDescriptor, offset);
        if (mapped != LinuxConstants.MAP_FAILED)
        {
            Interlocked.Add(ref _liveMappedBytes, (long)length);
        }

        return mapped;
    }

    public int Unmap(nint address, nuint length)
    {
        if (Refused("munmap"))
        {
            return -1;
        }

        int result = LinuxSystemCalls.Kernel.Unmap(address, length);
        if (result == 0)
        {
            Interlocked.Add(ref _liveMappedBytes, -(long)length);
        }

        return result;
    }

    // Moving remaps are "mremap"; remaps in place (no MREMAP_MAYMOVE) are "mremap(in place)".
    public nint Remap(nint oldAddress, nuint oldLength, nuint newLength, int flags)
    {
        if (Refused(flags == LinuxConstants.MREMAP_MAYMOVE ? "mremap" : "mremap(in place)"))
        {
            return LinuxConstants.MAP_FAILED;
        }

        nint moved = LinuxSystemCalls.Kernel.Remap(oldAddress, oldLength, newLength, flags);
        if (moved != LinuxConstants.MAP_FAILED)
        {
            Interlocked.Add(ref _liveMappedBytes, (long)newLength - (long)oldLength);
        }

        return moved;
    }

    public int Advise(nint address, nuint length, int advice) =>
        Refused(AdviceName(advice)) ? -1 : LinuxSystemCalls.Kernel.Advise(address, length, advice);

    public int Protect(nint address, nuint length, int protection)
    {
        lock (ProtectCalls)
        {
            ProtectCalls.Add((address, length, protection));
        }

        return Refused("mprotect") ? -1 : LinuxSystemCalls.Kernel.Protect(address, length, protection);
    }

    public int Lock(nint address, nuint length) =>
        Refused("mlock") ? -1 : LinuxSystemCalls.Kernel.Lock(address, length);

    public int Residency(nint address, nuint length, byte* pages) =>
        Refused("mincore") ? -1 : LinuxSystemCalls.Kernel.Residency(address, length, pages);

    public int Mbind(nint address, nuint length, int mode, ulong* nodeMask, ulong maxNode, uint flags) =>
        Refused("mbind") ? -1 : LinuxSystemCalls.Kernel.Mbind(address, length, mode, nodeMask, maxNode, flags);

    public int GetMempolicy(int* mode, ulong* nodeMask, ulong maxNode, nint address, ulong flags) =>
        Refused("get_mempolicy") ? -1 : LinuxSystemCalls.Kernel.GetMempolicy(mode, nodeMask, maxNode, address, flags);

    public int GetCpu(uint* cpu, uint* node)
    {
        GetCpuCount++;
        if (GetCpuAnswer is null)
        {
            return Refused("getcpu") ? -1 : LinuxSystemCalls.Kernel.GetCpu(cpu, node);
        }

        (int errno, int answeredCpu, int answeredNode) = GetCpuAnswer();
        *cpu = (uint)answeredCpu;
        *node = (uint)answeredNode;
        return Fail(errno);
    }

    public int SchedGetCpu()
    {
        SchedGetCpuCount++;
        if (SchedGetCpuAnswer is null)
        {
            return Refused("sched_getcpu") ? -1 : LinuxSystemCalls.Kernel.SchedGetCpu();
        }

        (int errno, int cpu) = SchedGetCpuAnswer();
        return errno == 0 ? cpu : Fail(errno);
    }

    private static int Fail(int errno)
    {
        if (errno == 0)
        {
            return 0;
        }

        Marshal.SetLastPInvokeError(errno);
        return -1;
    }

    private bool Refused(string call)
    {
        int errno = Refuse?.Invoke(call) ?? 0;
        return Fail(errno) != 0;
    }
}
