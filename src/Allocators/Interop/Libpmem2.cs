using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Interop;

/// <summary>
/// libpmem2 (Debian package <c>libpmem2</c>, <c>libpmem2.so.1</c>), loaded at run time when present:
/// it maps a file and returns the persist function that is right for the mapping, flushing the CPU
/// caches (and draining) on a DAX mapping with <c>MAP_SYNC</c>, <c>msync</c> on an ordinary file.
/// </summary>
/// <remarks>
/// <para>
/// libpmem2 needs a <c>pmem2_config</c> (the required store granularity: <c>PMEM2_GRANULARITY_PAGE</c>,
/// which every file satisfies), a <c>pmem2_source</c> (the file descriptor) and a <c>pmem2_map</c>
/// (the mapping, made by libpmem2 itself with <c>MAP_SYNC</c> where the file system has DAX); the
/// persist function belongs to the map. The library is loaded once per process and never unloaded.
/// </para>
/// <para>Every member but <see cref="TryLoad"/> needs a loaded library; none is thread-safe for the same map.</para>
/// </remarks>
internal static unsafe class Libpmem2
{
    /// <summary>The file name the loader looks for.</summary>
    public const string LibraryName = "libpmem2.so.1";

    /// <summary><c>PMEM2_GRANULARITY_BYTE</c>: persistent memory with flushes of the CPU caches done by the platform (eADR).</summary>
    public const int GranularityByte = 0;

    /// <summary><c>PMEM2_GRANULARITY_CACHE_LINE</c>: persistent memory mapped with <c>MAP_SYNC</c>; persisting flushes cache lines.</summary>
    public const int GranularityCacheLine = 1;

    /// <summary><c>PMEM2_GRANULARITY_PAGE</c>: an ordinary file; persisting is <c>msync</c>.</summary>
    public const int GranularityPage = 2;

    private static readonly Lock LoadLock = new();
    private static bool s_attempted;
    private static string? s_failure;

    private static delegate* unmanaged<nint*, int> s_configNew;
    private static delegate* unmanaged<nint*, int> s_configDelete;
    private static delegate* unmanaged<nint, int, int> s_configSetGranularity;
    private static delegate* unmanaged<nint*, int, int> s_sourceFromFd;
    private static delegate* unmanaged<nint*, int> s_sourceDelete;
    private static delegate* unmanaged<nint*, nint, nint, int> s_mapNew;
    private static delegate* unmanaged<nint*, int> s_mapDelete;
    private static delegate* unmanaged<nint, nint> s_mapGetAddress;
    private static delegate* unmanaged<nint, nuint> s_mapGetSize;
    private static delegate* unmanaged<nint, int> s_mapGetStoreGranularity;
    private static delegate* unmanaged<nint, nint> s_getPersistFn;
    private static delegate* unmanaged<byte*> s_errorMessage;

    /// <summary>Loads the library on first use; false, with <paramref name="failure"/> saying why, when it is missing or lacks an export.</summary>
    public static bool TryLoad(out string? failure)
    {
        lock (LoadLock)
        {
            if (!s_attempted)
            {
                s_attempted = true;
                s_failure = LoadCore();
            }

            failure = s_failure;
            return failure is null;
        }
    }

    /// <summary>
    /// Maps the whole file open as <paramref name="fileDescriptor"/> (read-write, shared) through
    /// libpmem2. On success the map handle, its address and size, its store granularity and its
    /// persist function are returned; on failure <paramref name="failure"/> carries libpmem2's message
    /// and nothing is left allocated.
    /// </summary>
    public static bool TryMap(int fileDescriptor, out nint map, out byte* address, out nuint size, out int granularity, out nint persist, out string? failure)
    {
        map = 0;
        address = null;
        size = 0;
        granularity = GranularityPage;
        persist = 0;
        nint config = 0;
        nint source = 0;
        try
        {
            if (s_configNew(&config) != 0 || s_configSetGranularity(config, GranularityPage) != 0)
            {
                failure = Describe("pmem2_config");
                return false;
            }

            if (s_sourceFromFd(&source, fileDescriptor) != 0)
            {
                failure = Describe("pmem2_source_from_fd");
                return false;
            }

            nint created = 0;
            if (s_mapNew(&created, config, source) != 0)
            {
                failure = Describe("pmem2_map_new");
                return false;
            }

            map = created;
            address = (byte*)s_mapGetAddress(map);
            size = s_mapGetSize(map);
            granularity = s_mapGetStoreGranularity(map);
            persist = s_getPersistFn(map);
            failure = null;
            return true;
        }
        finally
        {
            if (source != 0)
            {
                s_sourceDelete(&source);
            }

            if (config != 0)
            {
                s_configDelete(&config);
            }
        }
    }

    /// <summary>Calls a persist function returned by <see cref="TryMap"/>: the range is durable when it returns.</summary>
    public static void Persist(nint persist, byte* address, nuint length) =>
        ((delegate* unmanaged<void*, nuint, void>)persist)(address, length);

    /// <summary>Unmaps a map made by <see cref="TryMap"/>; false when libpmem2 refused.</summary>
    public static bool TryUnmap(nint map) => s_mapDelete(&map) == 0;

    private static string Describe(string call)
    {
        byte* message = s_errorMessage();
        return $"{call} failed: {(message == null ? "no message" : Marshal.PtrToStringUTF8((nint)message))}";
    }

    private static string? LoadCore()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "libpmem2 is used on Linux only";
        }

        if (!NativeLibrary.TryLoad(LibraryName, out nint handle))
        {
            return $"{LibraryName} was not found (install the Debian package libpmem2)";
        }

        try
        {
            s_configNew = (delegate* unmanaged<nint*, int>)NativeLibrary.GetExport(handle, "pmem2_config_new");
            s_configDelete = (delegate* unmanaged<nint*, int>)NativeLibrary.GetExport(handle, "pmem2_config_delete");
            s_configSetGranularity = (delegate* unmanaged<nint, int, int>)NativeLibrary.GetExport(handle, "pmem2_config_set_required_store_granularity");
            s_sourceFromFd = (delegate* unmanaged<nint*, int, int>)NativeLibrary.GetExport(handle, "pmem2_source_from_fd");
            s_sourceDelete = (delegate* unmanaged<nint*, int>)NativeLibrary.GetExport(handle, "pmem2_source_delete");
            s_mapNew = (delegate* unmanaged<nint*, nint, nint, int>)NativeLibrary.GetExport(handle, "pmem2_map_new");
            s_mapDelete = (delegate* unmanaged<nint*, int>)NativeLibrary.GetExport(handle, "pmem2_map_delete");
            s_mapGetAddress = (delegate* unmanaged<nint, nint>)NativeLibrary.GetExport(handle, "pmem2_map_get_address");
            s_mapGetSize = (delegate* unmanaged<nint, nuint>)NativeLibrary.GetExport(handle, "pmem2_map_get_size");
            s_mapGetStoreGranularity = (delegate* unmanaged<nint, int>)NativeLibrary.GetExport(handle, "pmem2_map_get_store_granularity");
            s_getPersistFn = (delegate* unmanaged<nint, nint>)NativeLibrary.GetExport(handle, "pmem2_get_persist_fn");
            s_errorMessage = (delegate* unmanaged<byte*>)NativeLibrary.GetExport(handle, "pmem2_errormsg");
            return null;
        }
        catch (EntryPointNotFoundException e)
        {
            return $"{LibraryName} lacks an export: {e.Message}";
        }
    }
}
