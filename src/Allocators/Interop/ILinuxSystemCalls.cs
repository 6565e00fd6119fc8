namespace AllocHosting.Allocators.Interop;

/// <summary>
/// The Linux system calls the memory-mapping and NUMA code makes, as one seam:
/// <see cref="MemorySources.MemoryMapSource"/> and <see cref="MemorySources.NumaTopology"/> call
/// through it, production code with <see cref="LinuxSystemCalls.Kernel"/> (the libc declarations in
/// <see cref="LinuxMemory"/> and <see cref="LinuxNuma"/>), tests with a stand-in that records calls or
/// refuses a chosen call with a chosen errno, so that the degradation paths run on machines whose
/// kernel never refuses.
/// </summary>
/// <remarks>
/// Every call reports failure as the C function does (-1, or <see cref="LinuxConstants.MAP_FAILED"/>)
/// with the errno in the last P/Invoke error, read with
/// <see cref="System.Runtime.InteropServices.Marshal.GetLastPInvokeError"/> right after the call; a
/// stand-in sets it with <see cref="System.Runtime.InteropServices.Marshal.SetLastPInvokeError"/>.
/// One interface call per system call: the call itself costs far more.
/// </remarks>
internal unsafe interface ILinuxSystemCalls
{
    /// <summary><c>mmap</c>: see <see cref="LinuxMemory.Map"/>.</summary>
    nint Map(nint address, nuint length, int protection, int flags, int fileDescriptor, nint offset);

    /// <summary><c>munmap</c>: see <see cref="LinuxMemory.Unmap"/>.</summary>
    int Unmap(nint address, nuint length);

    /// <summary><c>mremap</c>: see <see cref="LinuxMemory.Remap"/>.</summary>
    nint Remap(nint oldAddress, nuint oldLength, nuint newLength, int flags);

    /// <summary><c>madvise</c>: see <see cref="LinuxMemory.Advise"/>.</summary>
    int Advise(nint address, nuint length, int advice);

    /// <summary><c>mprotect</c>: see <see cref="LinuxMemory.Protect"/>.</summary>
    int Protect(nint address, nuint length, int protection);

    /// <summary><c>mlock</c>: see <see cref="LinuxMemory.Lock"/>.</summary>
    int Lock(nint address, nuint length);

    /// <summary><c>mincore</c>: see <see cref="LinuxMemory.Residency"/>.</summary>
    int Residency(nint address, nuint length, byte* pages);

    /// <summary><c>mbind</c>: see <see cref="LinuxNuma.Mbind"/>.</summary>
    int Mbind(nint address, nuint length, int mode, ulong* nodeMask, ulong maxNode, uint flags);

    /// <summary><c>get_mempolicy</c>: see <see cref="LinuxNuma.GetMempolicy"/>.</summary>
    int GetMempolicy(int* mode, ulong* nodeMask, ulong maxNode, nint address, ulong flags);

    /// <summary><c>getcpu</c>: see <see cref="LinuxNuma.GetCpu"/>.</summary>
    /// <exception cref="EntryPointNotFoundException">The C library has no <c>getcpu</c>.</exception>
    int GetCpu(uint* cpu, uint* node);

    /// <summary><c>sched_getcpu</c>: see <see cref="LinuxNuma.SchedGetCpu"/>.</summary>
    int SchedGetCpu();
}
