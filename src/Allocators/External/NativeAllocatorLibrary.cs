namespace AllocHosting.Allocators;

/// <summary>
/// A malloc-family native library that <see cref="ExternalNativeAllocator"/> loads at run time by
/// name (with <see cref="System.Runtime.InteropServices.NativeLibrary"/>, beside the process's own
/// <c>malloc</c>, never replacing it).
/// </summary>
public enum NativeAllocatorLibrary
{
    /// <summary>Microsoft's mimalloc, <c>libmimalloc.so.2</c> (Debian package <c>libmimalloc2.0</c>).</summary>
    Mimalloc,

    /// <summary>
    /// jemalloc, <c>libjemalloc.so.2</c> (Debian package <c>libjemalloc2</c>). Loading it after start-up
    /// needs <c>GLIBC_TUNABLES=glibc.rtld.optional_static_tls=65536</c> in the process's environment.
    /// </summary>
    Jemalloc,

    /// <summary>Rampant Pixels' rpmalloc, <c>librpmalloc.so</c> (no Debian package: build it yourself and put it on the library path).</summary>
    Rpmalloc,
}
