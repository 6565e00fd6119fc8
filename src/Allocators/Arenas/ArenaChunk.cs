using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// One chunk of a request arena: a region of native memory, an allocator over it, and a single
/// <see cref="System.Buffers.MemoryManager{T}"/> covering it, so that memory is handed out as
/// <see cref="Memory{T}"/> slices without allocating anything per rent.
/// </summary>
/// <remarks>
/// <para>
/// A chunk is used by one request at a time and reused by many requests in turn:
/// <see cref="TryRent(int, int, out Memory{byte})"/> hands out memory (several threads of the request may rent at once),
/// and <see cref="Release"/> ends the use: it retires the memory managers of that use (so a
/// <see cref="Memory{T}"/> that escaped the request throws <see cref="ObjectDisposedException"/>
/// instead of aliasing the next request's memory), optionally clears the bytes that were used
/// (the high-water mark, not the whole chunk), frees everything in O(1), and creates the fresh
/// manager for the next use (one small object per use, none per rent).
/// </para>
/// <code>
/// using var chunk = ArenaChunk.CreateBump(NativeMemorySource.Shared, 64 * 1024);
/// chunk.TryRent(1024, 16, out Memory&lt;byte&gt; buffer);
/// buffer.Span.Fill(42);
/// long used = chunk.Release(clear: true);   // buffer.Span now throws ObjectDisposedException
/// </code>
/// <para>
/// An owner that must keep late writers away from the next use (a request arena's quarantine) ends
/// a use in two steps instead: <see cref="Retire"/> when the request ends (the managers retire, the
/// allocator is reset, the bytes stay as they are), then, once no late write can still be in flight
/// and no pin is outstanding (<see cref="IsPinned"/>), <see cref="ClearPending"/> just before the
/// chunk's next use, so that whatever a late writer put there meanwhile is cleared too.
/// </para>
/// <para>
/// What it never does: it never grows (a rent that does not fit returns <see langword="false"/>),
/// never frees single rents, and <see cref="Release"/>, <see cref="Retire"/> and <see cref="Dispose"/>
/// must not run while rents of the owner are in flight. A rent that races with them (a late renter)
/// gets memory of the retired managers, whose every use throws, or memory of the next use, which the
/// owner must detect and refuse (the request arena checks its lease after the rent).
/// <see cref="System.Span{T}"/>s and pointers taken from a rented <see cref="Memory{T}"/> are not
/// protected after release; only the <see cref="Memory{T}"/> is.
/// </para>
/// </remarks>
public sealed unsafe partial class ArenaChunk : IDisposable
{
    private const int TypedManagerSlots = 4;

    // The region [_region, _region + _regionSize) comes from _source and goes back on Dispose.
    // The usable memory is [_usable, _usable + _capacity): the whole region for a bump chunk,
    // the blocks (not the bit set after them) for a bit set chunk.
    private readonly IMemorySource _source;
    private readonly byte* _region;
    private readonly nuint _regionSize;
    private readonly byte* _usable;
    private readonly int _capacity;
    private readonly ContextAllocator _context;

    // Exactly one is set, as Kind says. The bit set allocator is guarded by _bitSetLock.
    private readonly BumpAllocator? _bump;
    private readonly BitSetAllocator? _bitSet;
    private readonly SharedSpinLock _bitSetLock = new();

    // Under _bitSetLock: the end (relative to _usable) of the highest block rented since the last release.
    private nuint _bitSetHighWater;

    // The managers of the current use. _bytes is replaced by Release; _memory is its whole Memory.
    // _typed holds the managers for element types other than byte, created on first Rent<T>
    // of a use (guarded by _typedLock) and retired with _bytes.
    private ArenaChunkMemoryManager<byte> _bytes;
    private Memory<byte> _memory;
    private readonly object?[] _typed = new object?[TypedManagerSlots];
    private readonly Lock _typedLock = new();

    // Set (under _typedLock) when _typed holds a manager, so a use that rented only bytes
    // retires without taking _typedLock.
    private volatile bool _hasTyped;
    private bool _disposed;

    // Bytes at the start of the usable memory that ended uses may have written and that no clearing
    // has zeroed yet (Retire leaves them for ClearPending; the owner's thread only).
    private nuint _pendingClear;

    // Pins outstanding on the managers of every use, current or ended (Interlocked).
    private int _pins;

    // Diagnostics (see Tracker): the tracker of the current use, null when untracked (the default:
    // then a rent pays one null check). Under _trackedLock: the managers of the tracked rents of the
    // use, retired with the use's own, and the number of tracked uses ended, so that a tracked rent
    // that raced with the end retires its own manager.
    private ArenaRentTracker? _tracker;
    private readonly List<IDisposable> _tracked = [];
    private readonly Lock _trackedLock = new();
    private int _trackedUsesEnded;


    private ArenaChunk(IMemorySource source, byte* region, nuint regionSize, BumpAllocator? bump, BitSetAllocator? bitSet)
    {
        _source = source;
        _region = region;
        _regionSize = regionSize;
        _bump = bump;
        _bitSet = bitSet;
        if (bump is not null)
        {
            _usable = region;
            _capacity = (int)regionSize;
            // Thread-safe: the context allocates on the bump allocator's concurrent path, as TryRent does.
            _context = ContextAllocator.ShortLived(bump, threadSafe: true);
        }
        else
        {
            MemoryRange blocks = bitSet!.Range;
            _usable = (byte*)blocks.From;
            _capacity = (int)blocks.Length;
            // Thread-safe: the context takes the same lock as TryRent.
            _context = ContextAllocator.MediumLived(bitSet, _bitSetLock);
        }

        _bytes = new ArenaChunkMemoryManager<byte>(this, _usable, _capacity);
        _memory = _bytes.Memory;
    }

    /// <summary>Which allocator carves the chunk.</summary>
    public ArenaChunkKind Kind => _bump is not null ? ArenaChunkKind.Bump : ArenaChunkKind.BitSet;

    /// <summary>Bytes that can be rented from the chunk in one use.</summary>
    public int Capacity => _capacity;

    /// <summary>Bytes rented in the current use, alignment padding and block rounding included (a snapshot while rents run).</summary>
    public long Used => _bump is not null ? (long)_bump.Used : _bitSet!.Statistics.BytesInUse;

    /// <summary>Bytes at the start of the chunk that the current use may have written: what <see cref="Release"/> clears.</summary>
    public long HighWater
    {
        get
        {
            if (_bump is not null)
            {
                return (long)_bump.HighWater;
            }

            using (_bitSetLock.EnterScope())
            {
                return (long)BitSetHighWater();
            }
        }
    }

    /// <summary>The chunk's allocator as a <see cref="AllocHosting.Allocators.ContextAllocator"/> (owned by the chunk), for installing it as the allocator of a request's async flow.</summary>
    /// <remarks>It is the thread-safe form (<see cref="ContextAllocator.IsThreadSafe"/>), so it may be used while other threads rent.</remarks>
    public ContextAllocator ContextAllocator => _context;

    /// <summary>The statistics of the chunk's allocator.</summary>
    public AllocatorStatistics Statistics => _context.Statistics;

    /// <summary>Creates a chunk of <paramref name="size"/> bytes carved by a bump allocator; the region comes from <paramref name="source"/> and goes back on <see cref="Dispose"/>.</summary>
    /// <param name="source">Where the region comes from (for example a slot of an <see cref="ArenaMemorySource"/>).</param>
    /// <param name="size">Bytes in the chunk, between 1 and <see cref="int.MaxValue"/>.</param>
    /// <param name="zero">Zero the whole region now, for sources whose memory is not zeroed (memory maps are); otherwise only the first 64 bytes, where slot sources keep their free-list links, are zeroed.</param>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or above <see cref="int.MaxValue"/>.</exception>
    /// <exception cref="OutOfMemoryException">The source has no room.</exception>
    public static ArenaChunk CreateBump(IMemorySource source, nuint size, bool zero = false)
    {
        ArgumentNullException.ThrowIfNull(source);
        ValidateSize(size);
        byte* region = Obtain(source, size, zero);
        try
        {
            return new ArenaChunk(source, region, size, new BumpAllocator(region, size), null);
        }
        catch
        {
            source.Release(region, size);
            throw;
        }
    }

    /// <summary>Creates a chunk of <paramref name="size"/> bytes carved by a bit set allocator of <paramref name="blockSize"/>-byte blocks (its bit set lives in the chunk too).</summary>
    /// <param name="source">Where the region comes from.</param>
    /// <param name="size">Bytes in the region, between 1 and <see cref="int.MaxValue"/>.</param>
    /// <param name="blockSize">Bytes per block: a power of two of at least 8.</param>
    /// <param name="zero">Zero the whole region now, for sources whose memory is not zeroed; otherwise only the first 64 bytes are zeroed.</param>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or above <see cref="int.MaxValue"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="blockSize"/> is invalid or the region cannot hold one block.</exception>
    /// <exception cref="OutOfMemoryException">The source has no room.</exception>
    public static ArenaChunk CreateBitSet(IMemorySource source, nuint size, nuint blockSize, bool zero = false)
    {
        ArgumentNullException.ThrowIfNull(source);
        ValidateSize(size);
        byte* region = Obtain(source, size, zero);
        try
        {
            return new ArenaChunk(source, region, size, null, new BitSetAllocator(region, size, blockSize));
        }
        catch
        {
            source.Release(region, size);
            throw;
        }
    }

    /// <summary>
    /// Ends the current use: retires its memory managers, clears the used bytes when
    /// <paramref name="clear"/> is set, frees everything in O(1) and prepares a fresh manager for
    /// the next use. Must not run while rents are in flight. The same as <see cref="Retire"/>
    /// followed by <see cref="ClearPending"/> (or, without clearing, by dropping what is pending).
    /// </summary>
    /// <param name="clear">Whether to zero the bytes the use may have written.</param>
    /// <returns>The high-water mark of the use in bytes (what was cleared).</returns>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    public long Release(bool clear)
    {
        long highWater = Retire();
        if (clear)
        {
            ClearPending();
        }
        else
        {
            DropPending();
        }

        return highWater;
    }

    /// <summary>
    /// Ends the current use without clearing: retires its memory managers (every <see cref="Memory{T}"/>
    /// of the use throws from now on), frees everything in O(1) and prepares a fresh manager for the
    /// next use; the bytes the use may have written stay as they are, pending for <see cref="ClearPending"/>.
    /// A <see cref="NativeList{T}"/> whose block was carved by the use's <see cref="ContextAllocator"/>
    /// behaves as disposed from now on (and again for blocks carved after this, once
    /// <see cref="ClearPending"/> or <see cref="DropPending"/> readies the memory for its next use).
    /// Must not run while rents are in flight.
    /// </summary>
    /// <returns>The high-water mark of the use in bytes (what is now pending clearing, with what earlier uses left pending).</returns>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    public long Retire()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        RetireManagers();
        nuint highWater;
        if (_bump is not null)
        {
            highWater = _bump.HighWater;
            _context.AdvanceGeneration();
            _bump.Reset(false);
        }
        else
        {
            using (_bitSetLock.EnterScope())
            {
                highWater = BitSetHighWater();
                _context.AdvanceGeneration();   // under the lock: a free checked against the generation sees the reset whole
                _bitSet!.Reset();
                _bitSetHighWater = 0;
            }
        }

        _pendingClear = Math.Max(_pendingClear, highWater);
        _bytes = new ArenaChunkMemoryManager<byte>(this, _usable, _capacity);
        _memory = _bytes.Memory;
        return (long)highWater;
    }

    /// <summary>
    /// The diagnostics tracker of the current use, or null (the default) for an untracked use. Set by
    /// the owner before the use's first rent; cleared when the use ends (<see cref="Retire"/>).
    /// </summary>
    /// <remarks>
    /// While set, every rent calls <see cref="ArenaRentTracker.CaptureSite"/> and returns memory of a
    /// manager of its own over exactly the rented range (one small allocation per rent), so that a
    /// stale use reports the site of the very rent it came from (see <see cref="ArenaRentTracker"/>).
    /// </remarks>
    public ArenaRentTracker? Tracker
    {
        get => _tracker;
        set => Volatile.Write(ref _tracker, value);
    }

    /// <summary>Bytes at the start of the chunk that ended uses may have written and no clearing has zeroed yet (see <see cref="Retire"/>).</summary>
    public long PendingClearBytes => (long)_pendingClear;

    /// <summary>Zeroes the bytes ended uses may have written (<see cref="PendingClearBytes"/>), typically just before the chunk's next use; does nothing when none are pending.</summary>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    public void ClearPending()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _context.AdvanceGeneration();   // see DropPending
        if (_pendingClear != 0)
        {
            NativeMemory.Clear(_usable, _pendingClear);
            _pendingClear = 0;
        }
    }

    /// <summary>Forgets the bytes pending clearing without clearing them (for an owner whose policy is not to clear): the next <see cref="ClearPending"/> clears only what later uses write.</summary>
    public void DropPending()
    {
        // The memory is about to serve another use: a block carved after Retire (by an allocation
        // that raced with the end of the use) is no longer its holder's from here on either.
        _context.AdvanceGeneration();
        _pendingClear = 0;
    }

    /// <summary>
    /// Whether a <see cref="System.Buffers.MemoryHandle"/> from <c>Pin</c> on memory of any use (current
    /// or ended) is still outstanding: an asynchronous operation may still read or write it, so the
    /// owner must not reuse the chunk yet.
    /// </summary>
    public bool IsPinned => Volatile.Read(ref _pins) > 0;

    // Called by the managers' Pin and Unpin, from any thread.
    internal void AddPin(int delta)
    {
        if (Interlocked.Add(ref _pins, delta) < 0)
        {
            // An Unpin without its Pin (called directly rather than by a handle): not counted.
            Interlocked.Add(ref _pins, -delta);
        }
    }

    // Under _bitSetLock: rents record their own exact high-water; blocks allocated through the
    // context allocator are covered by the bit set's own, which is rounded up to whole bit set words
    // (64 blocks). The exact figure is kept unless the context allocator went beyond it.
    private nuint BitSetHighWater()
    {
        nuint wordBytes = 64 * _bitSet!.BlockSize;
        nuint allocatorHighWater = _bitSet.HighWaterBytes;
        return Allocator.AlignUp(_bitSetHighWater, wordBytes) >= allocatorHighWater ? _bitSetHighWater : allocatorHighWater;
    }

    /// <summary>Retires the managers, disposes the allocator and gives the region back to its source. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        RetireManagers();
        if (_protected)
        {
            // The source may write into the region as it takes it back (a slot source keeps links there).
            Unprotect();
        }

        _memory = default;
        _context.Dispose();
        _source.Release(_region, _regionSize);
    }

    private static byte* Obtain(IMemorySource source, nuint size, bool zero)
    {
        byte* region = source.Obtain(size);
        NativeMemory.Clear(region, zero ? size : Math.Min(size, 64));
        return region;
    }

    private static void ValidateSize(nuint size)
    {
        if (size == 0 || size > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"A chunk must be between 1 and {int.MaxValue} bytes.");
        }
    }

    private ArenaChunkMemoryManager<T> TypedManager<T>()
        where T : unmanaged
    {
        if (typeof(T) == typeof(byte))
        {
            return (ArenaChunkMemoryManager<T>)(object)_bytes;
        }

        lock (_typedLock)
        {
            for (int i = 0; i < _typed.Length; i++)
            {
                if (_typed[i] is ArenaChunkMemoryManager<T> existing)
                {
                    return existing;
                }

                if (_typed[i] is null)
                {
                    var created = new ArenaChunkMemoryManager<T>(this, (T*)_usable, _capacity / sizeof(T));
                    _typed[i] = created;
                    _hasTyped = true;
                    return created;
                }
            }

            return ThrowTooManyElementTypes<ArenaChunkMemoryManager<T>>();
        }
    }

    private void RetireManagers()
    {
        _bytes.Retire();
        if (Volatile.Read(ref _tracker) is not null)
        {
            RetireTrackedSlow();
        }

        if (!_hasTyped)
        {
            return;
        }

        lock (_typedLock)
        {
            _hasTyped = false;
            for (int i = 0; i < _typed.Length && _typed[i] is not null; i++)
            {
                ((IDisposable)_typed[i]!).Dispose();
                _typed[i] = null;
            }
        }
    }

    private void RetireTrackedSlow()
    {
        lock (_trackedLock)
        {
            // The tracker goes first, then the count is published (see TryRentTrackedSlow).
            Volatile.Write(ref _tracker, null);
            Volatile.Write(ref _trackedUsesEnded, _trackedUsesEnded + 1);
            foreach (IDisposable manager in _tracked)
            {
                manager.Dispose();
            }

            _tracked.Clear();
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static TResult ThrowTooManyElementTypes<TResult>() =>
        throw new NotSupportedException($"One arena chunk serves at most {TypedManagerSlots} element types besides byte in one use.");
}
