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
            MallocFree.Load(lib, "mi_malloc", "mi_free"),
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
        return new Jemalloc(MallocFree.Load(lib, "malloc", "free"));
    }

    /// <summary>A malloc and a free, each with and without the GC transition.</summary>
    internal class MallocFree
    {
        public MallocFree(MallocFree exports)
            : this(exports.Malloc, exports.Free, exports.MallocNoTransition, exports.FreeNoTransition)
        {
        }

        private MallocFree(
            delegate* unmanaged<nuint, void*> malloc,
            delegate* unmanaged<void*, void> free,
            delegate* unmanaged[SuppressGCTransition]<nuint, void*> mallocNoTransition,
            delegate* unmanaged[SuppressGCTransition]<void*, void> freeNoTransition)
        {
            Malloc = malloc;
            Free = free;
            MallocNoTransition = mallocNoTransition;
            FreeNoTransition = freeNoTransition;
        }

        public delegate* unmanaged<nuint, void*> Malloc { get; }

        public delegate* unmanaged<void*, void> Free { get; }

        public delegate* unmanaged[SuppressGCTransition]<nuint, void*> MallocNoTransition { get; }

        public delegate* unmanaged[SuppressGCTransition]<void*, void> FreeNoTransition { get; }

        public static MallocFree Load(nint lib, string malloc, string free)
        {
            nint m = NativeLibrary.GetExport(lib, malloc), f = NativeLibrary.GetExport(lib, free);
            return new MallocFree(
                (delegate* unmanaged<nuint, void*>)m,
                (delegate* unmanaged<void*, void>)f,
                (delegate* unmanaged[SuppressGCTransition]<nuint, void*>)m,
                (delegate* unmanaged[SuppressGCTransition]<void*, void>)f);
        }
    }

    internal sealed class Mimalloc(
        MallocFree exports,
        delegate* unmanaged<void*> heapNew,
        delegate* unmanaged<void*, nuint, void*> heapMalloc,
        delegate* unmanaged<void*, void> heapDestroy) : MallocFree(exports)
    {
        public readonly delegate* unmanaged<void*> HeapNew = heapNew;
        public readonly delegate* unmanaged<void*, nuint, void*> HeapMalloc = heapMalloc;
        public readonly delegate* unmanaged<void*, void> HeapDestroy = heapDestroy;
    }

    internal sealed class Jemalloc(MallocFree exports) : MallocFree(exports);
}
