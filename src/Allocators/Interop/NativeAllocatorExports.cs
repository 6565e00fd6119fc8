using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Interop;

/// <summary>
/// One malloc-family library's entry points, resolved once with <see cref="NativeLibrary.GetExport"/>
/// into unmanaged function pointers, behind the operations <see cref="ExternalNativeAllocator"/> needs.
/// Every call into the library lives in the derived types (one per library), so that native calls
/// stay in this folder.
/// </summary>
/// <remarks>
/// <para>
/// The callers pass non-zero sizes up to <see cref="Allocator.MaximumSize"/>, valid alignments and
/// pointers the library handed out; every member is thread-safe (the libraries are). A library is
/// loaded at most once per process and never unloaded: blocks it handed out may outlive any allocator.
/// </para>
/// <para>
/// The calls keep the GC transition: an allocation may map memory or take a lock inside the library,
/// which must not hold up a garbage collection (<c>SuppressGCTransition</c> would).
/// </para>
/// </remarks>
internal abstract unsafe class NativeAllocatorExports
{
    private static readonly Lock LoadLock = new();
    private static readonly Dictionary<NativeAllocatorLibrary, NativeAllocatorExports> Loaded = [];

    // The library's plain malloc and free, which the allocator's fast paths call inline (AllocateFast,
    // FreeFast) instead of through a virtual method: each non-inlined method that calls native code
    // sets up its own P/Invoke frame, about as costly as the library's own malloc/free pair
    // (issue 13). Null where every call needs more (rpmalloc initialises each thread first).
    private delegate* unmanaged<nuint, void*> _plainMalloc;
    private delegate* unmanaged<void*, void> _plainFree;

    // The plain malloc serves alignments up to the pointer size, and up to _plainAlignment for sizes of at least _plainMinimumSize.
    private nuint _plainAlignment;
    private nuint _plainMinimumSize;

    /// <summary>The library these exports come from.</summary>
    public abstract NativeAllocatorLibrary Library { get; }

    /// <summary>Allocates <paramref name="size"/> bytes aligned to <paramref name="alignment"/>; null when the library refuses (exhaustion, or a size or alignment it cannot serve).</summary>
    public abstract byte* Allocate(nuint size, nuint alignment);

    /// <summary>Frees a block (the size and alignment are those the caller passes, within the contract's range).</summary>
    public abstract void Free(byte* pointer, nuint size, nuint alignment);

    /// <summary><see cref="Allocate"/>, with the plain <c>malloc</c> called inline when the request needs nothing more.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* AllocateFast(nuint size, nuint alignment) =>
        _plainMalloc != null && (alignment <= (nuint)sizeof(nuint) || (alignment <= _plainAlignment && size >= _plainMinimumSize))
            ? (byte*)_plainMalloc(size)
            : Allocate(size, alignment);

    /// <summary><see cref="Free"/>, with the plain <c>free</c> called inline where the library has one for every block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FreeFast(byte* pointer, nuint size, nuint alignment)
    {
        if (_plainFree != null)
        {
            _plainFree(pointer);
        }
        else
        {
            Free(pointer, size, alignment);
        }
    }

    /// <summary>Resizes a block, in place when the library can, otherwise by moving it; null (and the block unchanged) when there is no room.</summary>
    public abstract byte* Reallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>Grows a block to at least <paramref name="newSize"/> bytes without moving it; false (and the block unchanged) when the library cannot.</summary>
    public abstract bool TryGrowInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>Shrinks a block without moving it, giving the tail back where the library can; false when the block must move.</summary>
    public abstract bool TryShrinkInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>
    /// The bytes every block the library hands out for this request has, as the library itself
    /// reports without a block (<c>nallocx</c>, <c>mi_good_size</c>); <paramref name="size"/> where it
    /// promises nothing more.
    /// </summary>
    public abstract nuint UsableSize(nuint size, nuint alignment);

    /// <summary>The bytes the block at <paramref name="pointer"/> really has, as the library reports (<c>sallocx</c>, <c>mi_usable_size</c>, <c>rpmalloc_usable_size</c>).</summary>
    public abstract nuint BlockUsableSize(byte* pointer);

    /// <summary>
    /// The exports of <paramref name="library"/>, loading it on first use; null, with
    /// <paramref name="failure"/> saying why (the loader's own message included), when it cannot be
    /// loaded or lacks an export.
    /// </summary>
    public static NativeAllocatorExports? TryGet(NativeAllocatorLibrary library, out string? failure)
    {
        lock (LoadLock)
        {
            if (Loaded.TryGetValue(library, out NativeAllocatorExports? exports))
            {
                failure = null;
                return exports;
            }

            string file = FileName(library);
            nint handle;
            try
            {
                handle = NativeLibrary.Load(file);
            }
            catch (DllNotFoundException error)
            {
                failure = $"The {library} library ({file}) could not be loaded: {Hint(library)} The loader said: {error.Message}";
                return null;
            }
            catch (BadImageFormatException error)
            {
                failure = $"The {library} library ({file}) is not a library for this process: {error.Message}";
                return null;
            }

            try
            {
                exports = library switch
                {
                    NativeAllocatorLibrary.Mimalloc => new MimallocExports(handle),
                    NativeAllocatorLibrary.Jemalloc => new JemallocExports(handle),
                    _ => new RpmallocExports(handle),
                };
            }
            catch (EntryPointNotFoundException error)
            {
                // Keep the handle loaded: it costs nothing and unloading a malloc library is never safe.
                failure = $"The {library} library ({file}) lacks an entry point this adaptor needs (an unsupported version?): {error.Message}";
                return null;
            }

            Loaded.Add(library, exports);
            failure = null;
            return exports;
        }
    }

    /// <summary>The file name <paramref name="library"/> is loaded by.</summary>
    public static string FileName(NativeAllocatorLibrary library) => library switch
    {
        NativeAllocatorLibrary.Mimalloc => "libmimalloc.so.2",
        NativeAllocatorLibrary.Jemalloc => "libjemalloc.so.2",
        NativeAllocatorLibrary.Rpmalloc => "librpmalloc.so",
        _ => throw new ArgumentOutOfRangeException(nameof(library), library, $"Unknown native allocator library {library}; allowed: {string.Join(", ", Enum.GetNames<NativeAllocatorLibrary>())}."),
    };

    /// <summary>What to do when <paramref name="library"/> is missing.</summary>
    public static string Hint(NativeAllocatorLibrary library) => library switch
    {
        NativeAllocatorLibrary.Mimalloc => "install the Debian package libmimalloc2.0 (apt-get install libmimalloc2.0).",
        NativeAllocatorLibrary.Jemalloc =>
            "install the Debian package libjemalloc2 (apt-get install libjemalloc2), and start the process with "
            + $"GLIBC_TUNABLES={JemallocExports.StaticTlsTunable} (jemalloc loaded after start-up needs that static TLS room; "
            + $"this process has GLIBC_TUNABLES={Environment.GetEnvironmentVariable("GLIBC_TUNABLES") ?? "(unset)"}).",
        _ => "rpmalloc has no Debian package; build librpmalloc.so from its source and put it on the library path (LD_LIBRARY_PATH).",
    };

    /// <summary>
    /// Declares the library's plain <c>malloc</c> (which must serve alignments up to the pointer
    /// size, and up to <paramref name="alignment"/> for sizes of at least <paramref name="minimumSize"/>,
    /// exactly as the derived <see cref="Allocate"/> would) and a <c>free</c> that takes every block,
    /// for <see cref="AllocateFast"/> and <see cref="FreeFast"/>.
    /// </summary>
    protected void UsePlainEntryPoints(delegate* unmanaged<nuint, void*> malloc, delegate* unmanaged<void*, void> free, nuint alignment, nuint minimumSize)
    {
        _plainMalloc = malloc;
        _plainFree = free;
        _plainAlignment = alignment;
        _plainMinimumSize = minimumSize;
    }

    /// <summary>An export of the library, as a raw function address.</summary>
    /// <exception cref="EntryPointNotFoundException">The library has no such export.</exception>
    protected static nint Export(nint handle, string name) => NativeLibrary.GetExport(handle, name);
}
