using System.Numerics;

namespace AllocHosting.Allocators.Interop;

/// <summary>
/// jemalloc's entry points: <c>mallocx</c>, <c>rallocx</c> and <c>xallocx</c> with
/// <c>MALLOCX_LG_ALIGN</c> flags, <c>nallocx</c> and <c>sallocx</c> for usable sizes, and its
/// <c>malloc</c>, <c>realloc</c> and <c>free</c> for the naturally aligned fast paths.
/// </summary>
/// <remarks>
/// <para>
/// The Debian build (<c>libjemalloc.so.2</c>) exports them unprefixed; <see cref="NativeAllocatorExports.Export"/>
/// on the library's own handle resolves jemalloc's symbols, never glibc's. Loading it after start-up
/// needs <see cref="StaticTlsTunable"/> (jemalloc's thread state uses initial-exec TLS).
/// </para>
/// <para>
/// Requests its size classes align already go through jemalloc's own <c>malloc</c> and <c>realloc</c>
/// (resolved on the library's handle, so jemalloc's, never glibc's), whose fast paths the <c>*allocx</c>
/// calls lack; every block is freed with jemalloc's <c>free</c>, which takes any jemalloc block. Not the
/// sized <c>sdallocx</c>: the contract lets a caller free with any size from the request to the usable
/// size, and after an in-place shrink that jemalloc could not really do (the block kept its size class)
/// the size passed may name another size class than the block's, which <c>sdallocx</c> would trust and
/// put the block in the wrong bin.
/// </para>
/// </remarks>
internal sealed unsafe class JemallocExports : NativeAllocatorExports
{
    /// <summary>The glibc tunable a process needs in its environment from start-up to load jemalloc late.</summary>
    public const string StaticTlsTunable = "glibc.rtld.optional_static_tls=65536";

    /// <summary>jemalloc's quantum (<c>LG_QUANTUM</c> 4 on x86-64 and arm64): every size class from 16 bytes is a multiple of it, so its blocks are aligned that far; the 8-byte class only to 8.</summary>
    private const nuint Quantum = 16;

    private readonly delegate* unmanaged<nuint, void*> _malloc;
    private readonly delegate* unmanaged<void*, nuint, void*> _realloc;
    private readonly delegate* unmanaged<void*, void> _free;
    private readonly delegate* unmanaged<nuint, int, void*> _mallocx;
    private readonly delegate* unmanaged<void*, nuint, int, void*> _rallocx;
    private readonly delegate* unmanaged<void*, nuint, nuint, int, nuint> _xallocx;
    private readonly delegate* unmanaged<void*, int, nuint> _sallocx;
    private readonly delegate* unmanaged<nuint, int, nuint> _nallocx;

    /// <summary>Resolves the exports of the loaded <c>libjemalloc.so.2</c>.</summary>
    /// <exception cref="EntryPointNotFoundException">An export is missing.</exception>
    public JemallocExports(nint handle)
    {
        _malloc = (delegate* unmanaged<nuint, void*>)Export(handle, "malloc");
        _realloc = (delegate* unmanaged<void*, nuint, void*>)Export(handle, "realloc");
        _free = (delegate* unmanaged<void*, void>)Export(handle, "free");
        _mallocx = (delegate* unmanaged<nuint, int, void*>)Export(handle, "mallocx");
        _rallocx = (delegate* unmanaged<void*, nuint, int, void*>)Export(handle, "rallocx");
        _xallocx = (delegate* unmanaged<void*, nuint, nuint, int, nuint>)Export(handle, "xallocx");
        _sallocx = (delegate* unmanaged<void*, int, nuint>)Export(handle, "sallocx");
        _nallocx = (delegate* unmanaged<nuint, int, nuint>)Export(handle, "nallocx");

        // Flags' rule: plain malloc for alignments up to 8, and up to the quantum from the quantum up; free for every block.
        UsePlainEntryPoints(_malloc, _free, Quantum, Quantum);
    }

    /// <inheritdoc />
    public override NativeAllocatorLibrary Library => NativeAllocatorLibrary.Jemalloc;

    /// <inheritdoc />
    public override byte* Allocate(nuint size, nuint alignment)
    {
        int flags = Flags(size, alignment);
        return flags == 0 ? (byte*)_malloc(size) : (byte*)_mallocx(size, flags);
    }

    /// <inheritdoc />
    public override void Free(byte* pointer, nuint size, nuint alignment) => _free(pointer);

    /// <summary><c>realloc</c> or <c>rallocx</c>: in place when the block's extent allows, otherwise a move; null when there is no room.</summary>
    public override byte* Reallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        int flags = Flags(newSize, alignment);
        return flags == 0 ? (byte*)_realloc(pointer, newSize) : (byte*)_rallocx(pointer, newSize, flags);
    }

    /// <summary><c>xallocx</c>, which returns the block's real size after trying: grown when that is at least <paramref name="newSize"/>.</summary>
    public override bool TryGrowInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        _xallocx(pointer, newSize, 0, Flags(newSize, alignment)) >= newSize;

    /// <summary>
    /// <c>xallocx</c> to the smaller size: jemalloc gives back the tail where the size classes allow
    /// (large blocks), otherwise keeps the block as it is; either way it stays in place with at least
    /// <paramref name="newSize"/> bytes, so the result is always true.
    /// </summary>
    public override bool TryShrinkInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        _xallocx(pointer, newSize, 0, Flags(newSize, alignment)) >= newSize;

    /// <summary><c>nallocx</c>: the real size <c>mallocx</c> gives this request; the request itself when jemalloc cannot serve it (<c>nallocx</c> returns 0).</summary>
    public override nuint UsableSize(nuint size, nuint alignment)
    {
        nuint real = _nallocx(size, Flags(size, alignment));
        return real >= size ? real : size;
    }

    /// <inheritdoc />
    public override nuint BlockUsableSize(byte* pointer) => _sallocx(pointer, 0);

    // MALLOCX_LG_ALIGN(lg): the base-2 logarithm of the alignment in the low bits. 0 (jemalloc's natural
    // alignment, its fastest path) where the size classes align the block far enough already.
    private static int Flags(nuint size, nuint alignment) =>
        alignment <= (nuint)sizeof(nuint) || (alignment <= Quantum && size >= Quantum) ? 0 : BitOperations.TrailingZeroCount(alignment);
}
