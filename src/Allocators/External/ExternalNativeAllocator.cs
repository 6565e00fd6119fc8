using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.Interop;

namespace AllocHosting.Allocators;

/// <summary>
/// A malloc-family native library (mimalloc, jemalloc or rpmalloc), loaded at run time by name
/// beside the process's own <c>malloc</c> (never replacing it), as an <see cref="IAllocator"/>.
/// Thread-safe.
/// </summary>
/// <remarks>
/// <para>
/// <see cref="Load"/> loads the library once per process (with
/// <see cref="System.Runtime.InteropServices.NativeLibrary"/>) and resolves the entry points its
/// profile uses; <c>TryLoad</c> says why it could not instead of throwing. Every instance of
/// a library shares the library's heap; the library is never unloaded.
/// </para>
/// <code>
/// using var mimalloc = ExternalNativeAllocator.Load(NativeAllocatorLibrary.Mimalloc);
/// byte* block = mimalloc.Allocate(100, 16);
/// nuint room = mimalloc.GetBlockUsableSize(block);      // 112: mimalloc's own answer
/// bool grown = mimalloc.TryGrowInPlace(block, 100, room); // true: mi_expand kept the block
/// mimalloc.Deallocate(block, room, 16);
/// </code>
/// <para>
/// <b>Profiles.</b> mimalloc: <c>mi_malloc</c>/<c>mi_malloc_aligned</c>, <c>mi_free</c>,
/// <c>mi_expand</c> for growth in place, <c>mi_realloc_aligned</c> for moves, <c>mi_good_size</c> for
/// the usable size of a request. jemalloc: <c>mallocx</c>/<c>rallocx</c> with
/// alignment flags (its <c>malloc</c>/<c>realloc</c> fast paths where no flag is needed, its <c>free</c>
/// for every block), <c>xallocx</c> for real growth and shrinking in place, <c>nallocx</c> for the usable
/// size of a request. rpmalloc: <c>rpaligned_alloc</c>, <c>rpfree</c>, <c>rpaligned_realloc</c>
/// (with <c>RPMALLOC_GROW_OR_FAIL</c> for growth in place), each thread initialised on its first call.
/// </para>
/// <para>
/// <b>Sizes.</b> <see cref="AllocatorBase.GetUsableSize"/> is the library's own answer for a request
/// (<c>nallocx</c>, <c>mi_good_size</c> for alignments up to 16), or the request where the library
/// promises nothing before it has a block (rpmalloc; mimalloc's over-aligned requests).
/// <see cref="GetBlockUsableSize"/> is the library's answer for one block (<c>sallocx</c>,
/// <c>mi_usable_size</c>, <c>rpmalloc_usable_size</c>); growing in place up to it always succeeds.
/// In-place results are the library's: nothing is faked or counted as moved when it was not.
/// </para>
/// <para>
/// <b>What it checks.</b> Sizes, alignments, null and the zero-size sentinel are checked as every
/// allocator does. None of these libraries can say whether an arbitrary address is one of its live
/// blocks, so by default <see cref="Owns"/> returns <see langword="false"/> and a foreign pointer or a
/// double free goes straight to the library (undefined behaviour, as with <c>free</c>). A checking
/// instance (<c>trackOwnership: true</c>) keeps a table of live blocks under a lock (the mechanism
/// <see cref="NativeMemoryAllocator"/> shares): <see cref="Owns"/>
/// answers exactly, and a foreign pointer, a double free, another alignment than the block's or a size
/// outside the block's range (from its request to its usable size) throws <see cref="ArgumentException"/>
/// before the library sees it. It costs a lock and a table update per operation.
/// </para>
/// <para>
/// <b>Exhaustion.</b> A library that returns no memory, or refuses a size or alignment it cannot
/// serve (mimalloc and rpmalloc refuse very large alignments), makes the <c>Try</c> forms return
/// <see langword="false"/> and the throwing forms throw <see cref="AllocatorExhaustedException"/>; the
/// original block of a failed resize stays valid.
/// </para>
/// <para>
/// <b>Statistics</b> count requested sizes in one cell per thread with plain writes, summed on
/// read, as <see cref="NativeMemoryAllocator"/>'s do (no locked instruction on the fast path); <see cref="AllocatorStatistics.Capacity"/> is
/// <see langword="null"/>. Counting costs a thread-static lookup per allocation and per free (on
/// Linux a call into the C library's dynamic TLS), which at small sizes is as much as the library's
/// own malloc/free pair. An instance loaded with <c>countStatistics: false</c> skips it: its
/// allocations and frees cost the library's pair plus the argument checks, and its
/// <see cref="Statistics"/> report only <see cref="AllocatorStatistics.FailureCount"/> (every other
/// figure is zero, and <see cref="CountsStatistics"/> says so). Use it where the allocator's figures
/// are not read; the switchable allocator's global allocator registered by the hosting package
/// counts, because its metrics report them.
/// </para>
/// <code>
/// // The fastest instance: no table of live blocks, no counting.
/// var jemalloc = ExternalNativeAllocator.Load(NativeAllocatorLibrary.Jemalloc, countStatistics: false);
/// </code>
/// <para>
/// <b>Dispose</b> of a checking instance frees every block still live and
/// refuses further use; an unchecked instance owns nothing and stays usable.
/// </para>
/// </remarks>
public sealed unsafe class ExternalNativeAllocator : AllocatorBase
{
    private readonly NativeAllocatorExports _exports;

    // Live blocks of a checking instance (address → request range and alignment); null otherwise.
    // The same mechanism as NativeMemoryAllocator's: see CheckedBlocks.
    private readonly CheckedBlocks<TrackedBlock>? _blocks;

    // Counters of requested sizes, one cell per thread with plain writes (no locked instruction on
    // the fast path); null for an instance that does not count.
    private readonly ThreadAllocatorCounters? _counters;

    private ExternalNativeAllocator(NativeAllocatorExports exports, bool trackOwnership, bool countStatistics)
    {
        _exports = exports;
        _blocks = trackOwnership ? new CheckedBlocks<TrackedBlock>(this, Name) : null;
        _counters = countStatistics ? new ThreadAllocatorCounters() : null;
    }

    /// <summary>The library this allocator calls.</summary>
    public NativeAllocatorLibrary Library => _exports.Library;

    /// <summary>Whether this instance keeps a table of live blocks (see the type's remarks).</summary>
    public bool TracksOwnership => _blocks is not null;

    /// <summary>Whether this instance counts its allocations, frees and bytes in use (see the type's remarks); one that does not reports only failures.</summary>
    public bool CountsStatistics => _counters is not null;

    /// <inheritdoc />
    /// <remarks>An instance loaded with <c>countStatistics: false</c> reports only <see cref="AllocatorStatistics.FailureCount"/>; every other figure is zero.</remarks>
    public override AllocatorStatistics Statistics =>
        _counters?.ToStatistics(null, FailureCount) ?? new AllocatorStatistics(0, 0, null, 0, 0, FailureCount, 0);

    /// <inheritdoc />
    protected override string Name => $"{nameof(ExternalNativeAllocator)} ({_exports.Library})";

    /// <summary>An unchecked instance owns nothing and stays usable after <see cref="AllocatorBase.Dispose()"/>.</summary>
    protected override bool RemainsUsableAfterDispose => _blocks is null;

    /// <summary>Loads <paramref name="library"/> (once per process) and returns an allocator over it.</summary>
    /// <param name="library">The library.</param>
    /// <param name="trackOwnership">Keep a table of live blocks, so that bad pointers and sizes throw instead of reaching the library.</param>
    /// <param name="countStatistics">Count allocations, frees and bytes in use for <see cref="Statistics"/> (the default); <see langword="false"/> saves a thread-static lookup per call and reports only failures.</param>
    /// <exception cref="DllNotFoundException">The library cannot be loaded or lacks an entry point; the message names the file, the Debian package and the loader's reason.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="library"/> is not a defined value.</exception>
    public static ExternalNativeAllocator Load(NativeAllocatorLibrary library, bool trackOwnership = false, bool countStatistics = true)
    {
        if (!TryLoad(library, out ExternalNativeAllocator? allocator, out string? failure, trackOwnership, countStatistics))
        {
            throw new DllNotFoundException(failure);
        }

        return allocator;
    }

    /// <summary>Loads <paramref name="library"/> like <see cref="Load"/>, returning <see langword="false"/> instead of throwing when it cannot be loaded.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="library"/> is not a defined value.</exception>
    public static bool TryLoad(
        NativeAllocatorLibrary library, [NotNullWhen(true)] out ExternalNativeAllocator? allocator, bool trackOwnership = false, bool countStatistics = true) =>
        TryLoad(library, out allocator, out _, trackOwnership, countStatistics);

    /// <summary>Loads <paramref name="library"/> like <see cref="Load"/>; when it cannot be loaded, <paramref name="failure"/> says why (file, Debian package, the loader's reason).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="library"/> is not a defined value.</exception>
    public static bool TryLoad(
        NativeAllocatorLibrary library,
        [NotNullWhen(true)] out ExternalNativeAllocator? allocator,
        [NotNullWhen(false)] out string? failure,
        bool trackOwnership = false,
        bool countStatistics = true)
    {
        if (!Enum.IsDefined(library))
        {
            throw new ArgumentOutOfRangeException(
                nameof(library), library, $"Unknown native allocator library {library}; allowed: {string.Join(", ", Enum.GetNames<NativeAllocatorLibrary>())}.");
        }

        NativeAllocatorExports? exports = NativeAllocatorExports.TryGet(library, out failure);
        if (exports is null)
        {
            allocator = null;
            failure ??= $"The {library} library could not be loaded.";
            return false;
        }

        allocator = new ExternalNativeAllocator(exports, trackOwnership, countStatistics);
        return true;
    }

    /// <summary>
    /// The bytes the live block at <paramref name="pointer"/> really has, as the library reports it
    /// (at least the size it was requested or last resized with): the block may be grown in place,
    /// used and freed with any size up to it.
    /// </summary>
    /// <exception cref="ArgumentException">A checking instance: <paramref name="pointer"/> is not a live block.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="pointer"/> is null.</exception>
    public nuint GetBlockUsableSize(byte* pointer)
    {
        ThrowIfDisposed();
        if (pointer == null)
        {
            Allocator.ThrowNullPointer();
        }

        if (_blocks is not null && !_blocks.Contains(pointer))
        {
            Allocator.ThrowNotLive(Name, pointer);
        }

        return _exports.BlockUsableSize(pointer);
    }

    /// <summary>Whether <paramref name="pointer"/> is the address of a live block. Only a checking instance can know; any other returns <see langword="false"/>.</summary>
    public override bool Owns(byte* pointer) => _blocks is not null && _blocks.Contains(pointer);

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        byte* pointer = _exports.AllocateFast(size, alignment);
        if (pointer == null)
        {
            return null;
        }

        if (_blocks is not null)
        {
            TrackSlow(pointer, size, alignment);
        }

        _counters?.Allocated(size, size);
        return pointer;
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        if (_blocks is not null)
        {
            // Count what the block was requested with: the caller may pass any size up to its usable size.
            size = UntrackSlow(pointer, size, alignment).Size;
        }

        _exports.FreeFast(pointer, size, alignment);
        _counters?.Freed(size);
    }

    /// <summary>The library's own in-place growth (<c>mi_expand</c>, <c>xallocx</c>, <c>rpaligned_realloc</c> with grow-or-fail).</summary>
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        ResizeInPlace(pointer, currentSize, newSize, alignment, grow: true);

    /// <summary>The library's own in-place shrink (<c>xallocx</c> for jemalloc); mimalloc and rpmalloc keep the block, which is always in place.</summary>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        ResizeInPlace(pointer, currentSize, newSize, alignment, grow: false);

    /// <summary>The library's reallocation (<c>mi_realloc_aligned</c>, <c>rallocx</c>, <c>rpaligned_realloc</c>), which grows in place when it can and moves otherwise.</summary>
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        Resize(pointer, currentSize, newSize, alignment);

    /// <summary>The library's reallocation, so that it can reuse the tail.</summary>
    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        Resize(pointer, currentSize, newSize, alignment);

    /// <inheritdoc />
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment) => _exports.UsableSize(size, alignment);

    /// <summary>Frees every block a checking instance still has; does nothing for other instances.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing && _blocks is not null)
        {
            FreeTrackedSlow();
        }

        base.Dispose(disposing);
    }

    private bool ResizeInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment, bool grow)
    {
        if (_blocks is null)
        {
            if (!ResizeInPlaceUnchecked(pointer, currentSize, newSize, alignment, grow))
            {
                return false;
            }
        }
        else
        {
            // Under the lock: the block cannot be freed by another thread while the library resizes it.
            using (_blocks.Enter())
            {
                ref TrackedBlock block = ref _blocks.Find(pointer, currentSize, alignment);
                if (!ResizeInPlaceUnchecked(pointer, currentSize, newSize, alignment, grow))
                {
                    return false;
                }

                currentSize = block.Size;
                block = TrackedBlock.For(newSize, alignment, _exports);
            }
        }

        _counters?.Resized((long)newSize - (long)currentSize);
        return true;
    }

    private bool ResizeInPlaceUnchecked(byte* pointer, nuint currentSize, nuint newSize, nuint alignment, bool grow) =>
        grow
            ? _exports.TryGrowInPlace(pointer, currentSize, newSize, alignment)
            : _exports.TryShrinkInPlace(pointer, currentSize, newSize, alignment);

    private byte* Resize(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (_blocks is not null)
        {
            // Out of the table while the library works on it: a moved block's old address may be
            // handed to another thread before the new one is recorded.
            currentSize = UntrackSlow(pointer, currentSize, alignment).Size;
        }

        byte* resized = _exports.Reallocate(pointer, currentSize, newSize, alignment);
        if (resized == null)
        {
            if (_blocks is not null)
            {
                TrackSlow(pointer, currentSize, alignment);
            }

            return null;
        }

        if (_blocks is not null)
        {
            TrackSlow(resized, newSize, alignment);
        }

        if (resized != pointer)
        {
            _counters?.Moved(newSize);
        }

        _counters?.Resized((long)newSize - (long)currentSize);
        return resized;
    }

    // The checking instance's table updates: out of line, so that the unchecked fast path inlines.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TrackSlow(byte* pointer, nuint size, nuint alignment)
    {
        if (!_blocks!.TryAdd(pointer, TrackedBlock.For(size, alignment, _exports)))
        {
            // Allocated while the allocator was being disposed: given back, and the use refused.
            _exports.FreeFast(pointer, size, alignment);
            ThrowIfDisposed();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private TrackedBlock UntrackSlow(byte* pointer, nuint size, nuint alignment)
    {
        return _blocks!.Remove(pointer, size, alignment);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeTrackedSlow()
    {
        foreach (var (address, block) in _blocks!.Close())
        {
            _exports.Free((byte*)address, block.Size, block.Alignment);
            _counters?.Freed(block.Size);
        }
    }

    // A checked block: calls may pass any size from its request (or last resize) to its usable
    // size, as the contract allows, and exactly its alignment.
    private readonly record struct TrackedBlock(nuint Size, nuint UsableSize, nuint Alignment) : ILiveBlock
    {
        public static TrackedBlock For(nuint size, nuint alignment, NativeAllocatorExports exports) =>
            new(size, Math.Max(size, exports.UsableSize(size, alignment)), alignment);

        public bool Fits(nuint size, nuint alignment) => size >= Size && size <= UsableSize && alignment == Alignment;

        [DoesNotReturn]
        public void ThrowMismatch(void* pointer, nuint size, nuint alignment) =>
            throw new ArgumentException(
                $"The block at 0x{(nuint)pointer:X} was requested with {Size} bytes (usable: {UsableSize}) aligned to {Alignment}, but {size} bytes aligned to {alignment} were passed; pass a size from {Size} to {UsableSize} and the block's alignment.",
                nameof(pointer));
    }
}
