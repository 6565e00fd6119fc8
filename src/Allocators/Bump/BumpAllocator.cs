using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// A bump (arena) allocator: hands out memory from one fixed region by moving an offset
/// forward, and releases everything at once with <see cref="Reset()"/>. The allocator for
/// short-lived contexts such as one HTTP request.
/// </summary>
/// <remarks>
/// <para>
/// Allocation rounds the offset up to the alignment and moves it past the block; a request
/// that ends exactly at the end of the region fits. Only the <em>most recent</em> block can
/// give memory back before <see cref="Reset()"/>: freeing it rewinds the offset (padding
/// included), and it can grow or shrink in place. Growing an older block allocates a new
/// block and copies; the old block's space is not reclaimed until <see cref="Reset()"/>.
/// Shrinking always stays in place.
/// </para>
/// <example>
/// <code>
/// using var arena = new BumpAllocator(NativeMemorySource.Shared, 64 * 1024);
/// byte* header = arena.Allocate(128, 8);
/// byte* body = arena.Allocate(4096, 64);
/// // ... use the blocks ...
/// arena.Reset(); // every block is released in O(1)
/// </code>
/// </example>
/// <para>
/// What it never does: it never grows its region, never wraps around, never reclaims the
/// space of a freed block that is not the most recent, and cannot see a double free of an
/// older block (such a free is accepted and ignored). A pointer outside the region, or one
/// at or beyond the current offset (never handed out, or already given back), is rejected
/// with <see cref="ArgumentException"/>.
/// </para>
/// <para>
/// Threads: the ordinary <see cref="IAllocator"/> members and the resets are for one thread
/// at a time. <see cref="TryAllocateConcurrent"/> and
/// <see cref="AllocateConcurrent"/> are lock-free and may run on many threads at once (the
/// tasks of one request fanning out), but never at the same time as the single-threaded
/// members. Because a concurrent allocation forgets the most recent block, a later
/// single-threaded free or in-place resize cannot rewind over concurrently allocated blocks.
/// </para>
/// <para>
/// Statistics: <see cref="AllocatorStatistics.BytesInUse"/> is <see cref="Used"/> (padding and
/// the space of freed older blocks included) and costs nothing to keep; the peak is tracked
/// only when the offset moves back. The single-threaded path counts with plain fields; the
/// concurrent path counts allocations and their bytes with one atomic addition to a packed word
/// besides its compare-exchange, and frees with one atomic increment.
/// </para>
/// <para>
/// Isolation: <see cref="Reset(bool)"/> with <c>clear</c> zeroes the <see cref="HighWater"/>
/// bytes written since the last reset (not the whole region) before releasing them.
/// </para>
/// <para>
/// Lifetime: a region obtained from an <see cref="IMemorySource"/> is released by
/// <see cref="AllocatorBase.Dispose()"/> (there is no finaliser: dispose the allocator). A
/// region the caller provides is never released by the allocator.
/// </para>
/// </remarks>
public sealed unsafe class BumpAllocator : AllocatorBase, IRegionAllocator
{
    // The guard of the unguarded concurrent paths (see TryAllocateConcurrentPrevalidated): never changes.
    internal static readonly int Unguarded;

    // Layout of the region: [_start, _next) handed out, [_next, _end) free; _start <= _next <= _end.
    // When _mostRecent != 0 it is the most recent block, which alone can be freed (rewinding to
    // _mostRecentStart, so its padding comes back too) or resized in place:
    // _start <= _mostRecentStart <= _mostRecent < _next. It is cleared by freeing that block, by
    // Reset and by any successful concurrent allocation, but never by a failed allocation (W-BU1).
    // After Dispose all four addresses are zero, so every allocation fails.
    private nuint _start;
    private nuint _end;

    // The offset; written with Interlocked by the concurrent path, plainly by the rest.
    private nuint _next;
    private nuint _mostRecent;
    private nuint _mostRecentStart;

    // Statistics. High-water marks are folded in only when the offset moves back, so the
    // allocation path pays nothing for them: _highWater is the largest Used since the last
    // reset (before the current offset), _peakUsed the largest before that reset.
    private nuint _highWater;
    private nuint _peakUsed;
    private long _allocationCount;
    private long _deallocationCount;
    private long _totalBytesAllocated;

    // The concurrent path's counts, packed so that one interlocked add keeps both exact (a second
    // and third locked instruction per allocation cost more than the compare-exchange itself):
    // allocations from bit ConcurrentCountShift up, bytes below. Moved into the two counters above
    // long before either part could overflow (see AddConcurrentCounts).
    private long _concurrentCounts;
    private const int ConcurrentCountShift = 40;
    private const long ConcurrentBytesMask = (1L << ConcurrentCountShift) - 1;
    private const long ConcurrentBytesFoldAt = 1L << (ConcurrentCountShift - 1);
    private const long ConcurrentCountFoldAt = 1L << 62;

    private IMemorySource? _source;
    private nuint _sourceSize;
    private bool _disposed;

    /// <summary>Creates a bump allocator over a region of <paramref name="size"/> bytes obtained from <paramref name="source"/>; the region is released on dispose.</summary>
    /// <param name="source">Where the region comes from.</param>
    /// <param name="size">The capacity in bytes.</param>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or larger than <see cref="Allocator.MaximumSize"/>.</exception>
    /// <exception cref="OutOfMemoryException">The source could not provide the region.</exception>
    public BumpAllocator(IMemorySource source, nuint size)
    {
        ArgumentNullException.ThrowIfNull(source);
        ValidateCapacity(size);
        byte* region = source.Obtain(size);
        _source = source;
        _sourceSize = size;
        Initialise((nuint)region, size);
    }

    /// <summary>
    /// Creates a bump allocator over a region the caller owns (for example a slot of an
    /// <see cref="ArenaMemorySource"/>); the allocator never releases it, and the region must
    /// outlive the allocator.
    /// </summary>
    /// <param name="region">The first byte of the region.</param>
    /// <param name="size">The capacity in bytes.</param>
    /// <exception cref="ArgumentNullException"><paramref name="region"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero, larger than <see cref="Allocator.MaximumSize"/>, or the region would wrap around the address space.</exception>
    public BumpAllocator(byte* region, nuint size)
    {
        if (region == null)
        {
            throw new ArgumentNullException(nameof(region), "The region must not be null.");
        }

        ValidateCapacity(size);
        if (size > nuint.MaxValue - (nuint)region)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "The region would wrap around the end of the address space.");
        }

        Initialise((nuint)region, size);
    }

    /// <summary>The region blocks are carved from, <c>[start, end)</c>.</summary>
    public MemoryRange Range => new(_start, _end);

    /// <summary>Bytes in the region.</summary>
    public nuint Capacity => _end - _start;

    /// <summary>Bytes handed out since the last reset, including alignment padding and the space of freed older blocks.</summary>
    public nuint Used => _next - _start;

    /// <summary>Bytes still available at the end of the region (before alignment).</summary>
    public nuint Remaining => _end - _next;

    /// <summary>
    /// The largest <see cref="Used"/> since the last reset: the bytes at the start of the region
    /// that blocks handed out since then may have written, freed ones included. Clearing this
    /// many bytes wipes everything callers wrote.
    /// </summary>
    public nuint HighWater => Math.Max(Used, _highWater);

    /// <inheritdoc />
    public override AllocatorStatistics Statistics
    {
        get
        {
            nuint used = Used;
            long concurrent = Volatile.Read(ref _concurrentCounts);
            return new AllocatorStatistics(
                BytesInUse: (long)used,
                PeakBytesInUse: (long)Math.Max(Math.Max(used, _highWater), _peakUsed),
                Capacity: (long)Capacity,
                AllocationCount: Volatile.Read(ref _allocationCount) + (concurrent >>> ConcurrentCountShift),
                DeallocationCount: _deallocationCount,
                FailureCount: FailureCount,
                TotalBytesAllocated: Volatile.Read(ref _totalBytesAllocated) + (concurrent & ConcurrentBytesMask));
        }
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public override bool Owns(byte* pointer) => (nuint)pointer - _start < _end - _start;

    /// <summary>Releases every block at once: the offset returns to the start of the region. O(1); the memory is not cleared.</summary>
    /// <remarks>Every pointer handed out before becomes invalid. Not to be called while concurrent allocations run.</remarks>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public void Reset()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        nuint highWater = HighWater;
        if (highWater > _peakUsed)
        {
            _peakUsed = highWater;
        }

        _highWater = 0;

        // Volatile: a guarded concurrent carve that reads the new offset also reads the guard its
        // owner changed before the reset (see TryAllocateConcurrentPrevalidated).
        Volatile.Write(ref _next, _start);
        _mostRecent = 0;
        _mostRecentStart = 0;
    }

    /// <summary>
    /// Releases every block at once like <see cref="Reset()"/>, first setting to zero the
    /// <see cref="HighWater"/> bytes written since the last reset when <paramref name="clear"/>
    /// is set, so the next user of the region never sees this user's data.
    /// </summary>
    /// <param name="clear">Whether to zero the bytes used since the last reset.</param>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public void Reset(bool clear)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (clear)
        {
            NativeMemory.Clear((void*)_start, HighWater);
        }

        Reset();
    }

    /// <summary>
    /// Allocates like <see cref="AllocatorBase.TryAllocate"/>, but safely from several threads
    /// at once (lock-free). Must not overlap in time with the single-threaded members.
    /// </summary>
    /// <param name="size">Bytes wanted.</param>
    /// <param name="alignment">Required alignment, a power of two.</param>
    /// <param name="pointer">The block, or <see langword="null"/> when the region is full.</param>
    /// <returns><see langword="true"/> when the block was allocated.</returns>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> exceeds <see cref="Allocator.MaximumSize"/>.</exception>
    /// <remarks>Blocks allocated this way can only be released by <see cref="Reset()"/>; freeing one is accepted and ignored.</remarks>
    public bool TryAllocateConcurrent(nuint size, nuint alignment, out byte* pointer) =>
        TryAllocateConcurrentGuarded(size, alignment, in Unguarded, 0, out pointer);

    /// <summary><see cref="TryAllocateConcurrent"/> with its checks, guarded as <see cref="TryAllocateConcurrentPrevalidated(nuint, nuint, ref readonly int, int, out byte*)"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryAllocateConcurrentGuarded(nuint size, nuint alignment, ref readonly int guard, int expected, out byte* pointer)
    {
        Allocator.ValidateRequest(size, alignment);
        if (size == 0)
        {
            pointer = Allocator.ZeroSizeSentinel;
            return true;
        }

        return TryAllocateConcurrentPrevalidated(size, alignment, in guard, expected, out pointer);
    }

    /// <summary><see cref="TryAllocateConcurrent"/> for a caller that validated the request and handles size 0 (a context allocator, after <see cref="AllocatorBase"/>'s checks): the lock-free fast path, one compare-exchange when uncontended.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryAllocateConcurrentPrevalidated(nuint size, nuint alignment, out byte* pointer) =>
        TryAllocateConcurrentPrevalidated(size, alignment, in Unguarded, 0, out pointer);

    /// <summary>
    /// <see cref="TryAllocateConcurrentPrevalidated(nuint, nuint, out byte*)"/> for an owner that resets the region for another
    /// user while late callers of the ended use may still be carving (a request arena's chunk): the
    /// owner changes <paramref name="guard"/> before it resets, and a carve that reads the offset, then
    /// finds the guard no longer <paramref name="expected"/>, takes nothing and returns false (without
    /// counting a failure). So a late carve never takes bytes of the next use, except in one case: it
    /// read the offset and the guard before the reset, and the next use then moved the offset to exactly
    /// the value it read before its compare-exchange ran.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool TryAllocateConcurrentPrevalidated(nuint size, nuint alignment, ref readonly int guard, int expected, out byte* pointer)
    {
        nuint next = Volatile.Read(ref _next);
        while (true)
        {
            nuint padding = (0 - next) & (alignment - 1);
            nuint needed = padding + size; // cannot overflow: size <= MaximumSize, padding < MaximumAlignment
            if (needed > _end - next)
            {
                pointer = null;
                return ConcurrentAllocationFailedSlow();
            }

            // Read after the offset (both volatile): an offset already reset comes with the changed guard.
            if (Volatile.Read(in guard) != expected)
            {
                pointer = null;
                return false;
            }

            nuint observed = Interlocked.CompareExchange(ref _next, next + needed, next);
            if (observed == next)
            {
                // Forget the most recent block so that no later single-threaded free or resize
                // can rewind the offset over this block. Written only when set, so concurrent
                // callers keep the cache line shared.
                if (_mostRecent != 0)
                {
                    _mostRecent = 0;
                }

                pointer = (byte*)(next + padding);
                AddConcurrentCounts(size);
                return true;
            }

            next = observed;
        }
    }

    /// <summary>
    /// Reserves, on the lock-free concurrent path, a window of between <paramref name="minimum"/> and
    /// <paramref name="preferred"/> bytes starting at an <paramref name="alignment"/> boundary: the
    /// preferred size when it fits, else whatever the region has left if that is at least the minimum.
    /// For an owner that carves the window further without atomics on one thread (a request arena's
    /// per-thread rent window): the reservation is not counted as an allocation (the owner counts the
    /// rents it carves), but it moves the offset, so <see cref="Used"/> and <see cref="HighWater"/> cover it.
    /// </summary>
    /// <remarks>One compare-exchange when uncontended. <paramref name="minimum"/> must be at least 1 and not above <paramref name="preferred"/>; <paramref name="alignment"/> a power of two. Guarded as <see cref="TryAllocateConcurrentPrevalidated(nuint, nuint, ref readonly int, int, out byte*)"/>: a reservation that finds <paramref name="guard"/> no longer <paramref name="expected"/> takes nothing.</remarks>
    internal bool TryReserveConcurrent(nuint minimum, nuint preferred, nuint alignment, ref readonly int guard, int expected, out byte* start, out nuint length)
    {
        nuint next = Volatile.Read(ref _next);
        while (true)
        {
            nuint padding = (0 - next) & (alignment - 1);
            nuint left = _end - next;
            if (left < padding + minimum)
            {
                start = null;
                length = 0;
                return ConcurrentAllocationFailedSlow();
            }

            if (Volatile.Read(in guard) != expected)
            {
                start = null;
                length = 0;
                return false;
            }

            nuint size = Math.Min(preferred, left - padding);
            nuint observed = Interlocked.CompareExchange(ref _next, next + padding + size, next);
            if (observed == next)
            {
                // As for a concurrent allocation: no later single-threaded free may rewind over it.
                if (_mostRecent != 0)
                {
                    _mostRecent = 0;
                }

                start = (byte*)(next + padding);
                length = size;
                return true;
            }

            next = observed;
        }
    }

    // One interlocked add counts the allocation and its bytes. A part nearing its limit (2^22
    // allocations or 2^39 bytes since the last move) is moved into the plain counters, whole
    // snapshots at a time, so the sums stay exact whatever the interleaving.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void AddConcurrentCounts(nuint size)
    {
        if ((ulong)size >= ConcurrentBytesFoldAt)
        {
            AddLargeConcurrentCountsSlow(size);
            return;
        }

        long counts = Interlocked.Add(ref _concurrentCounts, (1L << ConcurrentCountShift) + (long)size);
        if ((counts & ConcurrentBytesMask) >= ConcurrentBytesFoldAt || counts >= ConcurrentCountFoldAt)
        {
            FoldConcurrentCountsSlow();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddLargeConcurrentCountsSlow(nuint size)
    {
        Interlocked.Increment(ref _allocationCount);
        Interlocked.Add(ref _totalBytesAllocated, (long)size);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FoldConcurrentCountsSlow()
    {
        long counts = Volatile.Read(ref _concurrentCounts);
        while ((counts & ConcurrentBytesMask) >= ConcurrentBytesFoldAt || counts >= ConcurrentCountFoldAt)
        {
            long observed = Interlocked.CompareExchange(ref _concurrentCounts, 0, counts);
            if (observed == counts)
            {
                Interlocked.Add(ref _allocationCount, counts >>> ConcurrentCountShift);
                Interlocked.Add(ref _totalBytesAllocated, counts & ConcurrentBytesMask);
                return;
            }

            counts = observed;
        }
    }

    /// <summary>Allocates like <see cref="AllocatorBase.Allocate"/>, but safely from several threads at once; see <see cref="TryAllocateConcurrent"/>.</summary>
    /// <exception cref="AllocatorExhaustedException">The region has no room for the request.</exception>
    public byte* AllocateConcurrent(nuint size, nuint alignment)
    {
        if (!TryAllocateConcurrent(size, alignment, out byte* pointer))
        {
            ThrowExhaustedNoCount(size, alignment);
        }

        return pointer;
    }

    /// <inheritdoc />
    /// <remarks>The fast path: align the offset and move it past the block.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        nuint next = _next;
        nuint padding = (0 - next) & (alignment - 1);
        nuint needed = padding + size; // cannot overflow: size <= MaximumSize, padding < MaximumAlignment
        if (needed > _end - next)
        {
            return AllocationFailedSlow();
        }

        // Only a successful allocation becomes the most recent one (the fix of W-BU1).
        nuint pointer = next + padding;
        _next = next + needed;
        _mostRecentStart = next;
        _mostRecent = pointer;
        _allocationCount++;
        _totalBytesAllocated += (long)size;
        return (byte*)pointer;
    }

    /// <inheritdoc />
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        nuint address = (nuint)pointer;
        ValidateLive(address, size);
        if (address == _mostRecent)
        {
            NoteOffsetMovingBack();
            _next = _mostRecentStart;
            _mostRecent = 0;
        }

        // An older block's space stays taken until Reset; a double free of it cannot be seen.
        _deallocationCount++;
    }

    /// <summary>
    /// Frees a block from the concurrent side (a thread-safe context allocator): checks it like
    /// <see cref="DeallocateCore"/> and counts the free atomically, but never rewinds, since the
    /// concurrent path leaves no block most recent.
    /// </summary>
    internal void DeallocateConcurrentPrevalidated(byte* pointer, nuint size)
    {
        ValidateLive((nuint)pointer, size);
        Interlocked.Increment(ref _deallocationCount);
    }

    /// <inheritdoc />
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint address = (nuint)pointer;
        ValidateLive(address, currentSize);
        if (address != _mostRecent || newSize > _end - address)
        {
            return false;
        }

        _next = address + newSize;
        _totalBytesAllocated += (long)(newSize - currentSize);
        return true;
    }

    /// <inheritdoc />
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        nuint address = (nuint)pointer;
        ValidateLive(address, currentSize);
        if (address == _mostRecent)
        {
            NoteOffsetMovingBack();
            _next = address + newSize;
        }

        return true;
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (_disposed)
        {
            base.Dispose(disposing);
            return;
        }

        _disposed = true;
        nuint start = _start;
        _start = _end = _next = _mostRecent = _mostRecentStart = 0;
        IMemorySource? source = _source;
        _source = null;
        if (disposing && source is not null)
        {
            source.Release((byte*)start, _sourceSize);
        }

        base.Dispose(disposing);
    }

    private static void ValidateCapacity(nuint size)
    {
        if (size == 0 || size > Allocator.MaximumSize)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"The capacity must be between 1 and {Allocator.MaximumSize} bytes.");
        }
    }

    private void Initialise(nuint start, nuint size)
    {
        _start = start;
        _end = start + size;
        _next = start;
    }

    // A live block lies wholly in [_start, _next): anything else was never handed out, or was
    // already given back by a rewind or a reset.
    private void ValidateLive(nuint address, nuint size)
    {
        if (!Owns((byte*)address))
        {
            ThrowNotOwned(address);
        }

        if (address >= _next || size > _next - address)
        {
            ThrowNotLive(address, size);
        }
    }

    private void NoteOffsetMovingBack()
    {
        nuint used = _next - _start;
        if (used > _highWater)
        {
            _highWater = used;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocationFailedSlow()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return null;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ConcurrentAllocationFailedSlow()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        RecordFailureSlow();
        return false;
    }

    // After Dispose the range is empty, so every pointer lands here: the disposal is what to report.
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotOwned(nuint pointer)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Allocator.ThrowNotOwned(Name, (void*)pointer);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotLive(nuint pointer, nuint size) =>
        throw new ArgumentException(
            $"The block of {size} bytes at 0x{pointer:X} is not in the part of this {Name} handed out since the last reset: it was never allocated, was already freed as the most recent block, or the size is wrong.",
            nameof(pointer));
}
