using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;

namespace AllocHosting.Allocators;

/// <summary>
/// The process allocator (<see cref="NativeMemory"/>, i.e. the C runtime's <c>malloc</c>) as an
/// <see cref="IAllocator"/>: the seed's <c>GlobalAllocToAllocatorAdaptor</c> over the system allocator.
/// Thread-safe.
/// </summary>
/// <remarks>
/// <para>
/// Use it where an <see cref="IAllocator"/> is wanted but no arena or region is: as the global
/// allocator of a switchable allocator, behind an <see cref="AllocatorMemoryPool"/>, or as a peer in
/// benchmarks.
/// </para>
/// <code>
/// byte* block = NativeMemoryAllocator.Shared.Allocate(256, 64);
/// block = NativeMemoryAllocator.Shared.GrowingReallocate(block, 256, 1024, 64);
/// NativeMemoryAllocator.Shared.Deallocate(block, 1024, 64);
/// </code>
/// <para>
/// <b>The alignment rule.</b> Alignments up to <see cref="MallocAlignment"/> (what <c>malloc</c>
/// guarantees: 16 bytes on 64-bit platforms, 8 on 32-bit) use <see cref="NativeMemory.Alloc(nuint)"/>
/// (or, where the process exports it, the same <c>malloc</c> called directly, so that a failure is a
/// null return rather than an exception to catch on the fast path),
/// <see cref="NativeMemory.Realloc"/> and <see cref="NativeMemory.Free"/>; larger alignments use
/// <see cref="NativeMemory.AlignedAlloc"/>, <see cref="NativeMemory.AlignedRealloc"/> and
/// <see cref="NativeMemory.AlignedFree"/>. The two families must never be mixed on one pointer
/// (on Windows that corrupts the heap), and the only thing that chooses the family on free or
/// resize is the alignment argument: so every call for a block must pass the alignment the block
/// was allocated with, as the <see cref="IAllocator"/> contract already demands.
/// </para>
/// <para>
/// <b>What it cannot know.</b> <c>malloc</c> offers no way to ask whether an address is one of its
/// blocks, so by default <see cref="Owns"/> returns <see langword="false"/> for every pointer and a
/// foreign pointer or double free is passed straight to the C runtime (undefined behaviour, as with
/// <c>free</c> itself). A checking instance, <c>new NativeMemoryAllocator(trackOwnership: true)</c>,
/// keeps a table of live blocks under a lock (the mechanism <see cref="ExternalNativeAllocator"/> shares): <see cref="Owns"/> answers exactly and a foreign
/// pointer, a double free or a free with another size or alignment than the block has throws
/// <see cref="ArgumentException"/> without touching memory. It costs a lock and a table update per
/// operation; <see cref="Shared"/> does not track.
/// </para>
/// <para>
/// <b>Sizes.</b> The usable size of a request is the request itself (the C runtime may round up,
/// but does not promise how much). Growing in place is therefore never possible; shrinking in place
/// always is (the block keeps its memory until freed). Growing and shrinking otherwise go through
/// <c>realloc</c>, which may or may not move the block.
/// </para>
/// <para>
/// <b>Exhaustion.</b> When the C runtime returns no memory, <see cref="AllocatorBase.Allocate"/>
/// throws <see cref="AllocatorExhaustedException"/> and the <c>Try</c> forms return
/// <see langword="false"/>; the original block of a failed resize stays valid.
/// </para>
/// <para>
/// <b>Statistics</b> count requested sizes (not the C runtime's rounding) in one cell per thread,
/// written with plain additions and summed when <see cref="Statistics"/> is read, so the fast path
/// has no locked instruction and threads share no cache line: an unchecked alloc+free costs the C
/// runtime's pair plus a few nanoseconds. <see cref="AllocatorStatistics.Capacity"/> is
/// <see langword="null"/>. A reallocation that moves counts as one more allocation and one more
/// deallocation. The peak is exact while one thread made every update; after that it is the
/// largest bytes-in-use seen when a thread's own high doubled or <see cref="Statistics"/> was read.
/// </para>
/// <para>
/// <b>Dispose</b> of a tracking instance frees every block still live, after which every use throws
/// <see cref="ObjectDisposedException"/> (checked under the table's lock, which the tracking
/// instance takes anyway). Dispose of a non-tracking instance, such as <see cref="Shared"/>, does
/// nothing: it owns nothing to release, its blocks stay valid (and must be freed one by one) and
/// the allocator stays usable, so disposing <see cref="Shared"/> by mistake is harmless.
/// </para>
/// </remarks>
public sealed unsafe class NativeMemoryAllocator : AllocatorBase
{
    /// <summary>
    /// The largest alignment the unaligned family (<c>malloc</c>, <c>realloc</c>, <c>free</c>) serves:
    /// twice the pointer size, the alignment of <c>max_align_t</c> on the supported platforms.
    /// </summary>
    public static nuint MallocAlignment => (nuint)(2 * sizeof(nuint));

    // Live blocks of a tracking instance (address → size and alignment); null when not tracking.
    // The same mechanism as ExternalNativeAllocator's: see CheckedBlocks.
    private readonly CheckedBlocks<TrackedBlock>? _blocks;

    // Counters of requested sizes, one cell per thread with plain writes (no locked instruction on the fast path).
    private readonly ThreadAllocatorCounters _counters = new();

    /// <summary>Creates an allocator over the process allocator.</summary>
    /// <param name="trackOwnership">
    /// Keep a table of live blocks so that <see cref="Owns"/> answers and foreign pointers, double
    /// frees and mismatched sizes or alignments throw instead of corrupting the C runtime's heap.
    /// </param>
    public NativeMemoryAllocator(bool trackOwnership = false)
    {
        _blocks = trackOwnership ? new CheckedBlocks<TrackedBlock>(this, nameof(NativeMemoryAllocator)) : null;
    }

    /// <summary>A shared, non-tracking instance.</summary>
    public static NativeMemoryAllocator Shared { get; } = new();

    /// <summary>Whether this instance keeps a table of live blocks (see the type's remarks).</summary>
    public bool TracksOwnership => _blocks is not null;

    /// <inheritdoc />
    public override AllocatorStatistics Statistics => _counters.ToStatistics(null, FailureCount);

    /// <summary>A non-tracking instance (<see cref="Shared"/> among them) owns nothing and stays usable after <see cref="AllocatorBase.Dispose()"/>.</summary>
    protected override bool RemainsUsableAfterDispose => _blocks is null;

    /// <summary>
    /// Whether <paramref name="pointer"/> is the address of a live block. Only a tracking instance
    /// can know; any other instance returns <see langword="false"/> for every pointer.
    /// </summary>
    public override bool Owns(byte* pointer) => _blocks is not null && _blocks.Contains(pointer);

    /// <inheritdoc />
    /// <remarks>The fast path: one C runtime call and a counter update; only a tracking instance takes the lock (<c>TrackSlow</c>).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        byte* pointer = alignment <= MallocAlignment ? TryMalloc(size) : TryAlignedAlloc(size, alignment);
        if (pointer == null)
        {
            return null;
        }

        if (_blocks is not null)
        {
            TrackSlow(pointer, size, alignment);
        }

        _counters.Allocated(size, size);
        return pointer;
    }

    /// <inheritdoc />
    /// <remarks>The fast path, like <see cref="AllocateCore"/>'s (<c>UntrackSlow</c> for a tracking instance).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        if (_blocks is not null)
        {
            UntrackSlow(pointer, size, alignment);
        }

        Free(pointer, alignment);
        _counters.Freed(size);
    }

    /// <summary>Always <see langword="false"/>: the C runtime does not promise room after a block.</summary>
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (_blocks is not null)
        {
            using (_blocks.Enter())
            {
                _blocks.Find(pointer, currentSize, alignment);
            }
        }

        return false;
    }

    /// <summary>Always <see langword="true"/>: the block keeps its memory, of which the caller now uses less.</summary>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (_blocks is not null)
        {
            using (_blocks.Enter())
            {
                _blocks.Find(pointer, currentSize, alignment) = new TrackedBlock(newSize, alignment);
            }
        }

        _counters.Resized((long)newSize - (long)currentSize);
        return true;
    }

    /// <summary>Grows through <c>realloc</c> (or its aligned form), which moves the block when it must.</summary>
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        Resize(pointer, currentSize, newSize, alignment);

    /// <summary>Shrinks through <c>realloc</c> (or its aligned form), so that the C runtime can reuse the tail.</summary>
    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        Resize(pointer, currentSize, newSize, alignment);

    /// <summary>Frees every block a tracking instance still has; does nothing for other instances.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing && _blocks is not null)
        {
            FreeTrackedSlow();
        }

        base.Dispose(disposing);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeTrackedSlow()
    {
        foreach (var (address, block) in _blocks!.Close())
        {
            Free((byte*)address, block.Alignment);
            _counters.Freed(block.Size);
        }
    }

    private byte* Resize(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (_blocks is not null)
        {
            // Take the block out of the table while the C runtime works on it: if realloc moves it,
            // the old address may be handed to another thread before we record the new one.
            UntrackSlow(pointer, currentSize, alignment);
        }

        byte* resized = alignment <= MallocAlignment
            ? TryRealloc(pointer, newSize)
            : TryAlignedRealloc(pointer, newSize, alignment);
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
            _counters.Moved(newSize);
        }

        _counters.Resized((long)newSize - (long)currentSize);
        return resized;
    }

    // The tracking instance's table updates: kept out of line so that the non-tracking fast path inlines.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TrackSlow(byte* pointer, nuint size, nuint alignment)
    {
        if (!_blocks!.TryAdd(pointer, new TrackedBlock(size, alignment)))
        {
            // Allocated while the allocator was being disposed: given back, and the use refused.
            Free(pointer, alignment);
            ThrowIfDisposed();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void UntrackSlow(byte* pointer, nuint size, nuint alignment)
    {
        _blocks!.Remove(pointer, size, alignment);
    }

    private static void Free(byte* pointer, nuint alignment)
    {
        if (alignment <= MallocAlignment)
        {
            NativeMemory.Free(pointer);
        }
        else
        {
            NativeMemory.AlignedFree(pointer);
        }
    }

    // NativeMemory throws OutOfMemoryException when the C runtime returns null; the allocator contract
    // wants null. The try blocks live in small separate methods so that the callers still inline.
    // The unaligned allocation, the common one, calls the process's malloc itself where it can
    // (ProcessMalloc): a method with a try block is never inlined and costs a call with its own
    // P/Invoke frame per allocation.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* TryMalloc(nuint size) =>
        ProcessMalloc.IsAvailable ? (byte*)ProcessMalloc.Malloc(size) : TryNativeMemoryAlloc(size);

    private static byte* TryNativeMemoryAlloc(nuint size)
    {
        try
        {
            return (byte*)NativeMemory.Alloc(size);
        }
        catch (OutOfMemoryException)
        {
            return null;
        }
    }

    private static byte* TryAlignedAlloc(nuint size, nuint alignment)
    {
        try
        {
            return (byte*)NativeMemory.AlignedAlloc(size, alignment);
        }
        catch (OutOfMemoryException)
        {
            return null;
        }
    }

    private static byte* TryRealloc(byte* pointer, nuint newSize)
    {
        try
        {
            return (byte*)NativeMemory.Realloc(pointer, newSize);
        }
        catch (OutOfMemoryException)
        {
            return null;
        }
    }

    private static byte* TryAlignedRealloc(byte* pointer, nuint newSize, nuint alignment)
    {
        try
        {
            return (byte*)NativeMemory.AlignedRealloc(pointer, newSize, alignment);
        }
        catch (OutOfMemoryException)
        {
            return null;
        }
    }

    // A tracked block: every call for it must pass exactly the size and alignment it has.
    private readonly record struct TrackedBlock(nuint Size, nuint Alignment) : ILiveBlock
    {
        public bool Fits(nuint size, nuint alignment) => size == Size && alignment == Alignment;

        [DoesNotReturn]
        public void ThrowMismatch(void* pointer, nuint size, nuint alignment) =>
            Allocator.ThrowBlockMismatch(pointer, Size, Alignment, size, alignment);
    }
}
