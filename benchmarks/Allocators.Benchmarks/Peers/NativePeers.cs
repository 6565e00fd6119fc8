using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Benchmarks.Peers;

/// <summary>
/// The native allocators measured beside ours (performance.md): mimalloc and jemalloc, loaded
/// from their Debian packages with <see cref="NativeLibrary"/> so that they do not replace the
/// process malloc. Each export is exposed twice: as a plain unmanaged function pointer (with
/// the P/Invoke transition) and with <c>SuppressGCTransition</c> (the allocator's own cost).
/// Every native call of the benchmarks lives in this folder.
/// </summary>
internal static unsafe class NativePeers
{
    private static readonly Lazy<Mimalloc?> s_mimalloc = new(LoadMimalloc);
    private static readonly Lazy<Jemalloc?> s_jemalloc = new(LoadJemalloc);

    public static Mimalloc? Mi => s_mimalloc.Value;

    public static Jemalloc? Je => s_jemalloc.Value;

    /// <summary>jemalloc needs static TLS room that glibc only grants with this tunable set before start-up.</summary>
    public const string JemallocTunable = "glibc.rtld.optional_static_tls=65536";

    private static Mimalloc? LoadMimalloc()
    {
        if (!NativeLibrary.TryLoad("libmimalloc.so.2", out nint lib))
        {
            Console.WriteLine("// mimalloc not found (Debian package libmimalloc2.0): its benchmarks are skipped.");
            return null;
        }

        return new Mimalloc(
            (delegate* unmanaged<nuint, void*>)NativeLibrary.GetExport(lib, "mi_malloc"),
            (delegate* unmanaged<void*, void>)NativeLibrary.GetExport(lib, "mi_free"),
            (delegate* unmanaged[SuppressGCTransition]<nuint, void*>)NativeLibrary.GetExport(lib, "mi_malloc"),
            (delegate* unmanaged[SuppressGCTransition]<void*, void>)NativeLibrary.GetExport(lib, "mi_free"),
            (delegate* unmanaged<void*>)NativeLibrary.GetExport(lib, "mi_heap_new"),
            (delegate* unmanaged<void*, nuint, void*>)NativeLibrary.GetExport(lib, "mi_heap_malloc"),
            (delegate* unmanaged<void*, void>)NativeLibrary.GetExport(lib, "mi_heap_destroy"));
    }

    private static Jemalloc? LoadJemalloc()
    {
        // Loading jemalloc after start-up fails ("cannot allocate memory in static TLS block")
        // unless the process started with the tunable; TryLoad then simply returns false.
        if (!NativeLibrary.TryLoad("libjemalloc.so.2", out nint lib))
        {
            Console.WriteLine($"// jemalloc not loadable (Debian package libjemalloc2, GLIBC_TUNABLES={JemallocTunable}): its benchmarks are skipped.");
            return null;
        }

        // The Debian build exports the unprefixed names; GetExport on this handle resolves
        // jemalloc's own symbols, not glibc's.
        return new Jemalloc(
            (delegate* unmanaged<nuint, void*>)NativeLibrary.GetExport(lib, "malloc"),
            (delegate* unmanaged<void*, void>)NativeLibrary.GetExport(lib, "free"),
            (delegate* unmanaged[SuppressGCTransition]<nuint, void*>)NativeLibrary.GetExport(lib, "malloc"),
            (delegate* unmanaged[SuppressGCTransition]<void*, void>)NativeLibrary.GetExport(lib, "free"));
    }

    internal sealed class Mimalloc(
        delegate* unmanaged<nuint, void*> malloc,
        delegate* unmanaged<void*, void> free,
        delegate* unmanaged[SuppressGCTransition]<nuint, void*> mallocNoTransition,
        delegate* unmanaged[SuppressGCTransition]<void*, void> freeNoTransition,
        delegate* unmanaged<void*> heapNew,
        delegate* unmanaged<void*, nuint, void*> heapMalloc,
        delegate* unmanaged<void*, void> heapDestroy)
    {
        public readonly delegate* unmanaged<nuint, void*> Malloc = malloc;
        public readonly delegate* unmanaged<void*, void> Free = free;
        public readonly delegate* unmanaged[SuppressGCTransition]<nuint, void*> MallocNoTransition = mallocNoTransition;
        public readonly delegate* unmanaged[SuppressGCTransition]<void*, void> FreeNoTransition = freeNoTransition;
        public readonly delegate* unmanaged<void*> HeapNew = heapNew;
        public readonly delegate* unmanaged<void*, nuint, void*> HeapMalloc = heapMalloc;
        public readonly delegate* unmanaged<void*, void> HeapDestroy = heapDestroy;
    }

    internal sealed class Jemalloc(
        delegate* unmanaged<nuint, void*> malloc,
        delegate* unmanaged<void*, void> free,
        delegate* unmanaged[SuppressGCTransition]<nuint, void*> mallocNoTransition,
        delegate* unmanaged[SuppressGCTransition]<void*, void> freeNoTransition)
    {
        public readonly delegate* unmanaged<nuint, void*> Malloc = malloc;
        public readonly delegate* unmanaged<void*, void> Free = free;
        public readonly delegate* unmanaged[SuppressGCTransition]<nuint, void*> MallocNoTransition = mallocNoTransition;
        public readonly delegate* unmanaged[SuppressGCTransition]<void*, void> FreeNoTransition = freeNoTransition;
    }
}
