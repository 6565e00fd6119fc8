using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Interop;

/// <summary>
/// The libc memory-mapping calls, declared once. Every call sets the last P/Invoke error, read with
/// <see cref="Marshal.GetLastPInvokeError"/> immediately after a failure and described with
/// <see cref="LinuxErrors.Describe"/>.
/// </summary>
/// <remarks>Callers guard every use with <see cref="OperatingSystem.IsLinux"/>.</remarks>
internal static unsafe partial class LinuxMemory
{
    private const string LibC = "libc";

    /// <summary><c>void* mmap(void* addr, size_t length, int prot, int flags, int fd, off_t offset)</c>; returns <see cref="LinuxConstants.MAP_FAILED"/> on failure.</summary>
    [LibraryImport(LibC, EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Map(nint address, nuint length, int protection, int flags, int fileDescriptor, nint offset);

    /// <summary><c>int munmap(void* addr, size_t length)</c>; 0 or -1.</summary>
    [LibraryImport(LibC, EntryPoint = "munmap", SetLastError = true)]
    public static partial int Unmap(nint address, nuint length);

    /// <summary>
    /// <c>void* mremap(void* old, size_t oldLength, size_t newLength, int flags)</c>; returns
    /// <see cref="LinuxConstants.MAP_FAILED"/> on failure. The C function is variadic only for the
    /// MREMAP_FIXED address, which is never passed.
    /// </summary>
    [LibraryImport(LibC, EntryPoint = "mremap", SetLastError = true)]
    public static partial nint Remap(nint oldAddress, nuint oldLength, nuint newLength, int flags);

    /// <summary><c>int madvise(void* addr, size_t length, int advice)</c>; 0 or -1.</summary>
    [LibraryImport(LibC, EntryPoint = "madvise", SetLastError = true)]
    public static partial int Advise(nint address, nuint length, int advice);

    /// <summary><c>int mlock(const void* addr, size_t length)</c>; 0 or -1.</summary>
    [LibraryImport(LibC, EntryPoint = "mlock", SetLastError = true)]
    public static partial int Lock(nint address, nuint length);

    /// <summary><c>int mincore(void* addr, size_t length, unsigned char* vec)</c>: one byte per page, bit 0 set when resident.</summary>
    [LibraryImport(LibC, EntryPoint = "mincore", SetLastError = true)]
    public static partial int Residency(nint address, nuint length, byte* pages);

    /// <summary><c>int mprotect(void* addr, size_t length, int prot)</c>; 0 or -1. The address must be page-aligned.</summary>
    [LibraryImport(LibC, EntryPoint = "mprotect", SetLastError = true)]
    public static partial int Protect(nint address, nuint length, int protection);
}
