namespace AllocHosting.Allocators.Interop;

/// <summary>
/// mimalloc's entry points: <c>mi_malloc</c> and <c>mi_malloc_aligned</c>, <c>mi_free</c>,
/// <c>mi_good_size</c> and <c>mi_usable_size</c> for the usable size, <c>mi_expand</c> for growth in
/// place, <c>mi_realloc</c> and <c>mi_realloc_aligned</c> for moves.
/// </summary>
/// <remarks>
/// Requests that mimalloc's size bins align far enough use the unaligned calls (its blocks are
/// aligned to 8 bytes, and those above 8 bytes to <see cref="NaturalAlignment"/>: its bins are
/// multiples of 16 from there), the others the aligned calls. <c>mi_free</c> takes any block, so the free
/// needs neither size nor alignment. A shrink keeps the block (mimalloc frees by block, not by size),
/// so it is always in place.
/// </remarks>
internal sealed unsafe class MimallocExports : NativeAllocatorExports
{
    /// <summary>mimalloc's <c>MI_MAX_ALIGN_SIZE</c>: every block larger than 8 bytes is aligned to 16 bytes.</summary>
    private const nuint NaturalAlignment = 16;

    private readonly delegate* unmanaged<nuint, void*> _malloc;
    private readonly delegate* unmanaged<nuint, nuint, void*> _mallocAligned;
    private readonly delegate* unmanaged<void*, void> _free;
    private readonly delegate* unmanaged<void*, nuint, void*> _realloc;
    private readonly delegate* unmanaged<void*, nuint, nuint, void*> _reallocAligned;
    private readonly delegate* unmanaged<void*, nuint, void*> _expand;
    private readonly delegate* unmanaged<void*, nuint> _usableSize;
    private readonly delegate* unmanaged<nuint, nuint> _goodSize;

    /// <summary>Resolves the exports of the loaded <c>libmimalloc.so.2</c>.</summary>
    /// <exception cref="EntryPointNotFoundException">An export is missing.</exception>
    public MimallocExports(nint handle)
    {
        _malloc = (delegate* unmanaged<nuint, void*>)Export(handle, "mi_malloc");
        _mallocAligned = (delegate* unmanaged<nuint, nuint, void*>)Export(handle, "mi_malloc_aligned");
        _free = (delegate* unmanaged<void*, void>)Export(handle, "mi_free");
        _realloc = (delegate* unmanaged<void*, nuint, void*>)Export(handle, "mi_realloc");
        _reallocAligned = (delegate* unmanaged<void*, nuint, nuint, void*>)Export(handle, "mi_realloc_aligned");
        _expand = (delegate* unmanaged<void*, nuint, void*>)Export(handle, "mi_expand");
        _usableSize = (delegate* unmanaged<void*, nuint>)Export(handle, "mi_usable_size");
        _goodSize = (delegate* unmanaged<nuint, nuint>)Export(handle, "mi_good_size");

        // IsNatural's rule: mi_malloc for alignments up to 8, and up to 16 above 8 bytes; mi_free for every block.
        UsePlainEntryPoints(_malloc, _free, NaturalAlignment, (nuint)sizeof(nuint) + 1);
    }

    /// <inheritdoc />
    public override NativeAllocatorLibrary Library => NativeAllocatorLibrary.Mimalloc;

    /// <inheritdoc />
    public override byte* Allocate(nuint size, nuint alignment) =>
        IsNatural(size, alignment) ? (byte*)_malloc(size) : (byte*)_mallocAligned(size, alignment);

    /// <inheritdoc />
    public override void Free(byte* pointer, nuint size, nuint alignment) => _free(pointer);

    /// <inheritdoc />
    public override byte* Reallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        IsNatural(newSize, alignment) ? (byte*)_realloc(pointer, newSize) : (byte*)_reallocAligned(pointer, newSize, alignment);

    /// <summary><c>mi_expand</c>: the block grows within the memory mimalloc gave it (its <c>mi_usable_size</c>), or not at all.</summary>
    public override bool TryGrowInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        _expand(pointer, newSize) != null;

    /// <summary>Always true: the block keeps its memory, of which the caller now uses less.</summary>
    public override bool TryShrinkInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) => true;

    /// <summary>
    /// <c>mi_good_size</c> for alignments mimalloc serves with its unaligned path; for larger
    /// alignments mimalloc promises nothing beyond the request before it has a block, so the request.
    /// </summary>
    public override nuint UsableSize(nuint size, nuint alignment)
    {
        if (alignment > NaturalAlignment)
        {
            return size;
        }

        nuint good = _goodSize(size);
        return good >= size ? good : size;
    }

    /// <inheritdoc />
    public override nuint BlockUsableSize(byte* pointer) => _usableSize(pointer);

    // Whether mimalloc's bins align a block of this size far enough without the aligned path.
    private static bool IsNatural(nuint size, nuint alignment) =>
        alignment <= (nuint)sizeof(nuint) || (alignment <= NaturalAlignment && size > (nuint)sizeof(nuint));
}
