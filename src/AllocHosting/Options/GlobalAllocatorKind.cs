namespace AllocHosting;

/// <summary>
/// Which allocator serves the global mode of the <see cref="Allocators.SwitchableAllocator"/> that
/// <c>AddSwitchableAllocators</c> registers (<see cref="SwitchableAllocatorOptions.GlobalAllocator"/>).
/// The native libraries are loaded at run time beside the process's <c>malloc</c>, never replacing it
/// (see <see cref="Allocators.ExternalNativeAllocator"/>); a library that cannot be loaded stops
/// start-up with a message naming it and its Debian package.
/// </summary>
public enum GlobalAllocatorKind
{
    /// <summary>The process allocator, the C runtime's <c>malloc</c> (<see cref="Allocators.NativeMemoryAllocator.Shared"/>). The default.</summary>
    Process,

    /// <summary>mimalloc (<c>libmimalloc.so.2</c>, Debian package <c>libmimalloc2.0</c>).</summary>
    Mimalloc,

    /// <summary>jemalloc (<c>libjemalloc.so.2</c>, Debian package <c>libjemalloc2</c>; the process must start with <c>GLIBC_TUNABLES=glibc.rtld.optional_static_tls=65536</c>).</summary>
    Jemalloc,

    /// <summary>rpmalloc (<c>librpmalloc.so</c> on the library path; no Debian package).</summary>
    Rpmalloc,

    /// <summary>
    /// The suite's own NUMA-aware heap allocator, <see cref="Allocators.NumaHeapAllocator.Shared"/>: heaps
    /// per NUMA node under spin locks, each thread allocating on its node (no native library needed).
    /// </summary>
    NumaHeap,
}
