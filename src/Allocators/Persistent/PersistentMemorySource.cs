using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;
using AllocHosting.Allocators.MemorySources;
using Microsoft.Win32.SafeHandles;
using static AllocHosting.Allocators.Interop.LinuxConstants;
using static AllocHosting.Allocators.Interop.LinuxFileMapping;

namespace AllocHosting.Allocators;

/// <summary>
/// One file mapped whole into the process, shared with the file, with a flush that makes a range of
/// it durable: the backing store of <see cref="PersistentHeap"/>, usable alone for any structure that
/// must survive the process.
/// </summary>
/// <remarks>
/// <para>
/// <b>Mapping.</b> When libpmem2 is present (Debian package <c>libpmem2</c>, loaded at run time) and
/// not declined, libpmem2 maps the file itself: on a DAX file system with <c>MAP_SYNC</c>
/// (<see cref="PersistentMappingMode.SharedSync"/>), elsewhere <c>MAP_SHARED</c>. Without it the
/// source first asks for <c>MAP_SHARED_VALIDATE | MAP_SYNC</c> and, when the file system refuses
/// (EOPNOTSUPP, or EINVAL from a kernel before 4.15), maps <c>MAP_SHARED</c>; <see cref="MappingMode"/>
/// says which mapping is in use and <see cref="FallbackReason"/> why it is not the DAX one.
/// </para>
/// <para>
/// <b>Flushing.</b> <see cref="Flush(byte*, nuint)"/> returns once the range is durable: with
/// libpmem2, its persist function for the mapping (cache-line flushes and a fence under
/// <c>MAP_SYNC</c>, <c>msync</c> otherwise); without it, <c>msync(MS_SYNC)</c> of the pages the
/// range touches, which is correct for both mappings (on DAX the kernel flushes the CPU caches of
/// the range). Stores that are not flushed may reach the file in any order, or (after a power
/// failure) not at all; after the process merely dies (SIGKILL) they are all in the page cache.
/// </para>
/// <para>
/// <b>Not an <see cref="IMemorySource"/>.</b> A memory source hands out anonymous regions that
/// mean nothing after the process ends; this source is one file whose contents are the point, so
/// it exposes the mapping (<see cref="Address"/>, <see cref="Length"/>) and offsets into it.
/// </para>
/// <para>
/// The file is opened exclusively (<see cref="FileShare.None"/>, an advisory lock on Linux): a
/// second source on the same file, in this process or another, fails with <see cref="IOException"/>.
/// The file never grows. The mapping address changes from run to run, so structures inside the file
/// refer to each other by offset. <see cref="Flush(byte*, nuint)"/> is thread-safe; <see cref="Dispose"/> is not.
/// Linux on x86-64 or arm64 only (<see cref="MemoryMapSource.IsSupported"/>).
/// </para>
/// </remarks>
public sealed unsafe class PersistentMemorySource : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly nint _pmem2Map;
    private readonly nint _persist;
    private readonly nuint _pageSize = (nuint)Environment.SystemPageSize;
    private byte* _address;

    private PersistentMemorySource(string path, SafeFileHandle file, bool useLibpmem2)
    {
        Path = path;
        _file = file;
        long length = RandomAccess.GetLength(file);
        if (length <= 0)
        {
            throw new InvalidDataException($"'{path}' is empty: there is nothing to map.");
        }

        Length = length;
        int descriptor = (int)file.DangerousGetHandle();
        string? pmem2Failure = "libpmem2 was declined by the caller";
        if (useLibpmem2 && Libpmem2.TryLoad(out pmem2Failure)
            && Libpmem2.TryMap(descriptor, out nint map, out byte* address, out nuint size, out int granularity, out nint persist, out pmem2Failure))
        {
            if (size < (nuint)length)
            {
                Libpmem2.TryUnmap(map);
                throw new IOException($"libpmem2 mapped {size} bytes of '{path}', which has {length}.");
            }

            _pmem2Map = map;
            _persist = persist;
            _address = address;
            FlushMethod = PersistentFlushMethod.Libpmem2;
            MappingMode = granularity == Libpmem2.GranularityPage ? PersistentMappingMode.Shared : PersistentMappingMode.SharedSync;
            FallbackReason = MappingMode == PersistentMappingMode.Shared
                ? "libpmem2 mapped the file with page granularity: the file system has no DAX, so persisting is msync"
                : null;
            return;
        }

        FlushMethod = PersistentFlushMethod.Msync;
        nint mapped = LinuxMemory.Map(0, (nuint)length, PROT_READ | PROT_WRITE, MAP_SHARED_VALIDATE | MAP_SYNC, descriptor, 0);
        if (mapped != MAP_FAILED)
        {
            MappingMode = PersistentMappingMode.SharedSync;
            FallbackReason = $"libpmem2 is not used ({pmem2Failure}): persisting is msync";
        }
        else
        {
            int errno = Marshal.GetLastPInvokeError();
            mapped = LinuxMemory.Map(0, (nuint)length, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0);
            if (mapped == MAP_FAILED)
            {
                throw new IOException($"Could not map '{path}' ({length} bytes): {LinuxErrors.Describe("mmap", Marshal.GetLastPInvokeError())}.");
            }

            MappingMode = PersistentMappingMode.Shared;
            FallbackReason = $"MAP_SYNC refused ({LinuxErrors.Describe("mmap", errno)}: the file system has no DAX), so MAP_SHARED with msync; libpmem2 is not used ({pmem2Failure})";
        }

        _address = (byte*)mapped;
    }

    /// <summary>The file's path, as given.</summary>
    public string Path { get; }

    /// <summary>The length of the file and of the mapping, in bytes.</summary>
    public long Length { get; }

    /// <summary>The start of the mapping (different in every run); <see langword="null"/> once disposed.</summary>
    public byte* Address => _address;

    /// <summary>The mapping in use: <see cref="PersistentMappingMode.SharedSync"/> only on a DAX file system.</summary>
    public PersistentMappingMode MappingMode { get; }

    /// <summary>How <see cref="Flush(byte*, nuint)"/> makes a range durable.</summary>
    public PersistentFlushMethod FlushMethod { get; }

    /// <summary>Why the source uses less than DAX with libpmem2 (no DAX, libpmem2 missing, declined or failing), or null.</summary>
    public string? FallbackReason { get; }

    /// <summary>Whether this process can map files: Linux on x86-64 or arm64.</summary>
    public static bool IsSupported => MemoryMapSource.IsSupported;

    /// <summary>
    /// Creates a new file of <paramref name="length"/> bytes (zeroed, its blocks allocated up front so
    /// that a full disk fails here and not as SIGBUS on a later store), makes its length durable and maps it.
    /// </summary>
    /// <param name="path">The file; it must not exist.</param>
    /// <param name="length">The file's length in bytes, rounded up to the page size.</param>
    /// <param name="useLibpmem2">Whether to use libpmem2 when it is present; <see langword="false"/> maps and flushes with the kernel's calls only.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is not positive.</exception>
    /// <exception cref="IOException">The file exists, or cannot be created, sized or mapped.</exception>
    /// <exception cref="PlatformNotSupportedException">Not Linux on x86-64 or arm64.</exception>
    public static PersistentMemorySource Create(string path, long length, bool useLibpmem2 = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        ThrowIfUnsupported();
        long rounded = checked((long)Allocator.AlignUp((nuint)length, (nuint)Environment.SystemPageSize));
        SafeFileHandle file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.None, rounded);
        try
        {
            RandomAccess.SetLength(file, rounded);
            if (FileSync((int)file.DangerousGetHandle()) != 0)
            {
                throw new IOException($"Could not make the length of '{path}' durable: {LinuxErrors.Describe("fsync", Marshal.GetLastPInvokeError())}.");
            }

            return new PersistentMemorySource(path, file, useLibpmem2);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Maps an existing file whole.</summary>
    /// <param name="path">The file.</param>
    /// <param name="useLibpmem2">Whether to use libpmem2 when it is present.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="IOException">The file is open elsewhere (locked), or cannot be mapped.</exception>
    /// <exception cref="InvalidDataException">The file is empty.</exception>
    /// <exception cref="PlatformNotSupportedException">Not Linux on x86-64 or arm64.</exception>
    public static PersistentMemorySource Open(string path, bool useLibpmem2 = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ThrowIfUnsupported();
        SafeFileHandle file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.None);
        try
        {
            return new PersistentMemorySource(path, file, useLibpmem2);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>The address of <paramref name="offset"/> in the mapping.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="offset"/> is negative or not below <see cref="Length"/>.</exception>
    /// <exception cref="ObjectDisposedException">The source is disposed.</exception>
    public byte* ToPointer(long offset)
    {
        byte* address = MappedAddress();
        if ((ulong)offset >= (ulong)Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"The offset must lie in the file '{Path}' (0 to {Length - 1}).");
        }

        return address + offset;
    }

    /// <summary>Makes <paramref name="length"/> bytes at <paramref name="offset"/> durable; see <see cref="Flush(byte*, nuint)"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range does not lie in the file.</exception>
    public void Flush(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"{length} bytes at offset {offset} do not lie in the file '{Path}' ({Length} bytes).");
        }

        Flush(MappedAddress() + offset, (nuint)length);
    }

    /// <summary>
    /// Makes <paramref name="length"/> bytes at <paramref name="address"/> durable: when it returns,
    /// they survive a crash of the process and of the machine. An empty range does nothing.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The range does not lie in the mapping.</exception>
    /// <exception cref="IOException"><c>msync</c> failed (an I/O error writing the file back).</exception>
    /// <exception cref="ObjectDisposedException">The source is disposed.</exception>
    public void Flush(byte* address, nuint length)
    {
        byte* start = MappedAddress();
        if (address < start || (nuint)(address - start) > (nuint)Length || length > (nuint)Length - (nuint)(address - start))
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"{length} bytes at 0x{(nuint)address:X} do not lie in the mapping of '{Path}' (0x{(nuint)start:X}, {Length} bytes).");
        }

        if (length == 0)
        {
            return;
        }

        if (_persist != 0)
        {
            Libpmem2.Persist(_persist, address, length);
            return;
        }

        nuint first = (nuint)address & ~(_pageSize - 1);
        nuint end = (nuint)address + length;
        if (Sync((nint)first, end - first, MS_SYNC) != 0)
        {
            throw new IOException($"Could not flush {length} bytes of '{Path}': {LinuxErrors.Describe("msync", Marshal.GetLastPInvokeError())}.");
        }
    }

    /// <summary>Unmaps the file and closes it. Stores not flushed are still written back by the kernel in time, but with no promise against a machine crash.</summary>
    public void Dispose()
    {
        byte* address = _address;
        if (address == null)
        {
            return;
        }

        _address = null;
        if (_pmem2Map != 0)
        {
            Libpmem2.TryUnmap(_pmem2Map);
        }
        else
        {
            LinuxMemory.Unmap((nint)address, (nuint)Length);
        }

        _file.Dispose();
    }

    private byte* MappedAddress()
    {
        byte* address = _address;
        ObjectDisposedException.ThrowIf(address == null, this);
        return address;
    }

    private static void ThrowIfUnsupported()
    {
        if (!IsSupported)
        {
            throw new PlatformNotSupportedException(MemoryMapSource.UnsupportedReason);
        }
    }
}
