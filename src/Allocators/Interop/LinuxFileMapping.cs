using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Interop;

/// <summary>
/// The libc calls and constants of shared file mappings, used by
/// <see cref="PersistentMemorySource"/>: <c>mmap</c> of a file (through <see cref="LinuxMemory.Map"/>)
/// with <c>MAP_SHARED</c> or, on a DAX file system, <c>MAP_SHARED_VALIDATE | MAP_SYNC</c>, and
/// <c>msync</c> to write a range of the mapping back to the file.
/// </summary>
/// <remarks>Values are those of the generic Linux ABI shared by x86-64 and arm64, like <see cref="LinuxConstants"/>.</remarks>
internal static partial class LinuxFileMapping
{
    private const string LibC = "libc";

    /// <summary>Stores reach the file (through the page cache) and every other mapping of it.</summary>
    public const int MAP_SHARED = 0x01;

    /// <summary>Like <see cref="MAP_SHARED"/>, but the kernel refuses flags it does not know instead of ignoring them (needed for <see cref="MAP_SYNC"/>).</summary>
    public const int MAP_SHARED_VALIDATE = 0x03;

    /// <summary>
    /// Synchronous page faults (DAX only): the file's metadata for every page written through the
    /// mapping is durable before the write can happen, so flushing the CPU caches makes data durable
    /// without <c>msync</c>. Refused with EOPNOTSUPP on a file system without DAX.
    /// </summary>
    public const int MAP_SYNC = 0x80000;

    /// <summary><c>msync</c>: write back and wait.</summary>
    public const int MS_SYNC = 4;

    /// <summary>The errno of a mapping flag the file system does not support.</summary>
    public const int EOPNOTSUPP = 95;

    /// <summary><c>int msync(void* addr, size_t length, int flags)</c>; 0 or -1. The address must be page-aligned.</summary>
    [LibraryImport(LibC, EntryPoint = "msync", SetLastError = true)]
    public static partial int Sync(nint address, nuint length, int flags);

    /// <summary><c>int fsync(int fd)</c>; 0 or -1: the file's data and metadata (its length) are durable.</summary>
    [LibraryImport(LibC, EntryPoint = "fsync", SetLastError = true)]
    public static partial int FileSync(int fileDescriptor);
}
