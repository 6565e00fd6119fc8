namespace AllocHosting.Allocators.Interop;

/// <summary>The real system calls: each member forwards to its declaration in <see cref="LinuxMemory"/> or <see cref="LinuxNuma"/>.</summary>
/// <remarks>Sealed, so that a caller holding this type rather than the interface calls it directly.</remarks>
internal sealed unsafe class LinuxSystemCalls : ILinuxSystemCalls
{
    private LinuxSystemCalls()
    {
    }

    /// <summary>The one instance.</summary>
    public static LinuxSystemCalls Kernel { get; } = new();

    /// <inheritdoc />
    public nint Map(nint address, nuint length, int protection, int flags, int fileDescriptor, nint offset) =>
        LinuxMemory.Map(address, length, protection, flags, fileDescriptor, offset);

    /// <inheritdoc />
    public int Unmap(nint address, nuint length) => LinuxMemory.Unmap(address, length);

    /// <inheritdoc />
    public nint Remap(nint oldAddress, nuint oldLength, nuint newLength, int flags) =>
        LinuxMemory.Remap(oldAddress, oldLength, newLength, flags);

    /// <inheritdoc />
    public int Advise(nint address, nuint length, int advice) => LinuxMemory.Advise(address, length, advice);

    /// <inheritdoc />
    public int Protect(nint address, nuint length, int protection) => LinuxMemory.Protect(address, length, protection);

    /// <inheritdoc />
    public int Lock(nint address, nuint length) => LinuxMemory.Lock(address, length);

    /// <inheritdoc />
    public int Residency(nint address, nuint length, byte* pages) => LinuxMemory.Residency(address, length, pages);

    /// <inheritdoc />
    public int Mbind(nint address, nuint length, int mode, ulong* nodeMask, ulong maxNode, uint flags) =>
        LinuxNuma.Mbind(address, length, mode, nodeMask, maxNode, flags);

    /// <inheritdoc />
    public int GetMempolicy(int* mode, ulong* nodeMask, ulong maxNode, nint address, ulong flags) =>
        LinuxNuma.GetMempolicy(mode, nodeMask, maxNode, address, flags);

    /// <inheritdoc />
    public int GetCpu(uint* cpu, uint* node) => LinuxNuma.GetCpu(cpu, node);

    /// <inheritdoc />
    public int SchedGetCpu() => LinuxNuma.SchedGetCpu();
}
