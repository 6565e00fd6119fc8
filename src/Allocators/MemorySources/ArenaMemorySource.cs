using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// A memory source of equally sized slots carved from one region of a backing source: the
/// pool that per-request (or per-context) bump allocators take their memory from.
/// Thread-safe and lock-free.
/// </summary>
/// <remarks>
/// <para>
/// Slots are handed out last-in first-out, so the slot obtained next is the one released
/// last, whose pages and cache lines are still warm.
/// </para>
/// <example>
/// <code>
/// using var arena = new ArenaMemorySource(NativeMemorySource.Shared, slotSize: 64 * 1024, slotCount: 32);
/// byte* slot = arena.Obtain(arena.SlotSize);
/// using (var requestAllocator = new BumpAllocator(slot, arena.SlotSize))
/// {
///     // ... the request allocates from requestAllocator ...
/// }
/// arena.Release(slot, arena.SlotSize);
/// </code>
/// </example>
/// <para>
/// Slot size and alignment: the requested slot size is rounded up to a power of two between
/// 8 and 64 bytes when it is at most 64, and to a multiple of 64 bytes (a cache line)
/// otherwise; <see cref="SlotSize"/> reports the result. Every slot is aligned to
/// <see cref="Granularity"/>: the largest power of two dividing <see cref="SlotSize"/>, capped
/// by the backing source's granularity. So slots of 64 bytes or more are at least
/// cache-line aligned, and slots whose size is a multiple of the page size are page aligned
/// when the backing source is.
/// </para>
/// <para>
/// What it checks (the seed checked nothing): a request larger than a slot, a pointer
/// outside the region or not at a slot boundary, and releasing a slot that is already free
/// all throw and change nothing.
/// </para>
/// <para>
/// Disposal: <see cref="Dispose"/> refuses further <see cref="Obtain"/> calls at once, and
/// gives the region back to the backing source as soon as every slot has been released
/// (immediately when none is out). Slots still out therefore stay valid until released,
/// instead of pointing at memory that was returned underneath them. Like most types,
/// <see cref="Dispose"/> must not run at the same time as <see cref="Obtain"/> or
/// <see cref="TryObtain"/>; releases may race with it.
/// </para>
/// </remarks>
public sealed unsafe class ArenaMemorySource : IMemorySource, IDisposable
{
    // The free list is a Treiber stack threaded through the free slots: the first 8 bytes of a
    // free slot hold the index of the next free slot (EmptyIndex ends the list). The head packs
    // the index of the top slot (low 32 bits) and a version tag (high 32 bits) that changes on
    // every push and pop, so a pop that read a stale "next" (ABA) fails its compare-exchange
    // (unless that thread slept through exactly 2^32 pushes and pops).
    private const uint EmptyIndex = uint.MaxValue;
    private const byte SlotFree = 0;
    private const byte SlotInUse = 1;

    private readonly IMemorySource _backing;
    private readonly byte* _start;
    private readonly nuint _regionSize;
    private readonly nuint _slotSize;
    private readonly int _slotCount;

    // One byte per slot, SlotFree or SlotInUse, switched by compare-exchange: the double-release
    // check. A slot is SlotInUse exactly while it is outside the free list (between a pop and
    // its push).
    private readonly byte[] _states;

    private long _head;
    private int _freeCount;

    // 1 once Dispose ran; 1 once the region went back to the backing source.
    private int _disposed;
    private int _regionReleased;

    /// <summary>Obtains one region for <paramref name="slotCount"/> slots of at least <paramref name="slotSize"/> bytes from <paramref name="backing"/>.</summary>
    /// <param name="backing">Where the region comes from; it gets the region back when this arena is disposed and every slot was released.</param>
    /// <param name="slotSize">The least size of a slot; rounded up as the type remarks describe.</param>
    /// <param name="slotCount">The number of slots.</param>
    /// <param name="initializer">Runs once for every slot, before the slot is linked into the free list; optional.</param>
    /// <exception cref="ArgumentNullException"><paramref name="backing"/> is null.</exception>
    /// <exception cref="ArgumentException">The backing source's granularity is below 8 bytes.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="slotSize"/> or <paramref name="slotCount"/> is not positive, or the region would be too large.</exception>
    /// <exception cref="OutOfMemoryException">The backing source could not provide the region.</exception>
    public ArenaMemorySource(IMemorySource backing, nuint slotSize, int slotCount, SlotInitializer? initializer = null)
    {
        ArgumentNullException.ThrowIfNull(backing);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slotCount);
        SourceSize.Validate(slotSize, nameof(slotSize), "slot");

        if (backing.Granularity < 8)
        {
            throw new ArgumentException($"The backing source's granularity ({backing.Granularity}) must be at least 8 so that every slot can hold its free-list link.", nameof(backing));
        }

        _slotSize = RoundSlotSize(slotSize);
        if (_slotSize > Allocator.MaximumSize / (nuint)slotCount)
        {
            throw new ArgumentOutOfRangeException(nameof(slotCount), slotCount, $"{slotCount} slots of {_slotSize} bytes exceed the largest region ({Allocator.MaximumSize} bytes).");
        }

        _backing = backing;
        _slotCount = slotCount;
        _regionSize = _slotSize * (nuint)slotCount;
        Granularity = Math.Min(_slotSize & (0 - _slotSize), backing.Granularity);
        _states = new byte[slotCount];
        _start = backing.Obtain(_regionSize);
        try
        {
            for (int index = 0; index < slotCount; index++)
            {
                byte* slot = SlotAt(index);
                initializer?.Invoke(slot, _slotSize);
                *(ulong*)slot = index + 1 < slotCount ? (uint)(index + 1) : EmptyIndex;
            }
        }
        catch
        {
            backing.Release(_start, _regionSize);
            throw;
        }

        _head = Pack(0, 0);
        _freeCount = slotCount;
    }

    /// <summary>The alignment of every slot; see the type remarks.</summary>
    public nuint Granularity { get; }

    /// <summary>The size of every slot in bytes, after rounding: the largest request <see cref="Obtain"/> accepts.</summary>
    public nuint SlotSize => _slotSize;

    /// <summary>The number of slots.</summary>
    public int SlotCount => _slotCount;

    /// <summary>Slots not handed out now (a snapshot when other threads obtain or release).</summary>
    public int FreeSlotCount => Volatile.Read(ref _freeCount);

    /// <summary>The region the slots are carved from.</summary>
    public MemoryRange Range => new((nuint)_start, (nuint)_start + _regionSize);

    /// <summary>Whether <paramref name="pointer"/> lies in the arena's region (not whether its slot is out).</summary>
    public bool Owns(byte* pointer) => (nuint)pointer - (nuint)_start < _regionSize;

    /// <summary>Obtains a free slot.</summary>
    /// <param name="size">Bytes needed, between 1 and <see cref="SlotSize"/>; the whole slot is handed out.</param>
    /// <returns>The first byte of the slot (its first 8 bytes hold stale free-list data).</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or larger than <see cref="SlotSize"/>.</exception>
    /// <exception cref="MemorySourceExhaustedException">Every slot is out.</exception>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    public byte* Obtain(nuint size)
    {
        if (!TryObtain(size, out byte* region))
        {
            ThrowExhausted(size);
        }

        return region;
    }

    /// <summary>Obtains a free slot like <see cref="Obtain"/>, but returns <see langword="false"/> when every slot is out.</summary>
    /// <remarks>The fast path: one compare-exchange on the free list's head (retried under contention).</remarks>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or larger than <see cref="SlotSize"/>.</exception>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    public bool TryObtain(nuint size, out byte* region)
    {
        ValidateSize(size);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        long head = Volatile.Read(ref _head);
        while (true)
        {
            uint index = IndexOf(head);
            if (index == EmptyIndex)
            {
                region = null;
                return false;
            }

            byte* slot = SlotAt((int)index);

            // Another thread may pop this slot and overwrite its link before our exchange;
            // then the tag has moved on, the exchange fails and the stale value is discarded.
            // The read itself is safe: every slot lies in our region, which stays mapped.
            uint next = (uint)Volatile.Read(ref *(ulong*)slot);
            long observed = Interlocked.CompareExchange(ref _head, Pack(next, TagOf(head) + 1), head);
            if (observed == head)
            {
                // The slot is ours alone now (popped by the exchange), so a plain write marks it.
                Debug.Assert(_states[index] == SlotFree, "a slot on the free list is marked free");
                Volatile.Write(ref _states[index], SlotInUse);
                Interlocked.Decrement(ref _freeCount);
                region = slot;
                return true;
            }

            head = observed;
        }
    }

    /// <summary>Gives a slot back; it becomes the next one <see cref="Obtain"/> hands out.</summary>
    /// <remarks>The fast path: a compare-exchange on the slot's state and one on the free list's head.</remarks>
    /// <param name="region">The slot, as <see cref="Obtain"/> returned it.</param>
    /// <param name="size">The size passed to <see cref="Obtain"/> (between 1 and <see cref="SlotSize"/>).</param>
    /// <exception cref="ArgumentNullException"><paramref name="region"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or larger than <see cref="SlotSize"/>.</exception>
    /// <exception cref="ArgumentException"><paramref name="region"/> is not the start of a slot of this arena, or that slot is already free.</exception>
    public void Release(byte* region, nuint size)
    {
        if (region == null)
        {
            throw new ArgumentNullException(nameof(region), "A slot address must not be null.");
        }

        ValidateSize(size);
        nuint offset = (nuint)region - (nuint)_start;
        if (offset >= _regionSize)
        {
            ThrowNotOwned(region);
        }

        if (offset % _slotSize != 0)
        {
            ThrowNotSlotStart(region);
        }

        uint index = (uint)(offset / _slotSize);
        if (Interlocked.CompareExchange(ref _states[index], SlotFree, SlotInUse) != SlotInUse)
        {
            ThrowAlreadyFree(region);
        }

        long head = Volatile.Read(ref _head);
        while (true)
        {
            // The link is written before the exchange publishes the slot, and only this
            // thread may write it: the slot is on no list.
            Volatile.Write(ref *(ulong*)region, IndexOf(head));
            long observed = Interlocked.CompareExchange(ref _head, Pack(index, TagOf(head) + 1), head);
            if (observed == head)
            {
                break;
            }

            head = observed;
        }

        if (Interlocked.Increment(ref _freeCount) == _slotCount && Volatile.Read(ref _disposed) != 0)
        {
            ReleaseRegionOnceSlow();
        }
    }

    /// <summary>
    /// Refuses further obtains and gives the region back to the backing source once every
    /// slot is free: now when none is out, otherwise when the last one is released.
    /// Idempotent.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0 && Volatile.Read(ref _freeCount) == _slotCount)
        {
            ReleaseRegionOnceSlow();
        }
    }

    private static nuint RoundSlotSize(nuint slotSize) =>
        slotSize <= 64
            ? Math.Max(8, BitOperations.RoundUpToPowerOf2(slotSize))
            : Allocator.AlignUp(slotSize, 64);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Pack(uint index, uint tag) => (long)(((ulong)tag << 32) | index);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint IndexOf(long head) => (uint)head;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint TagOf(long head) => (uint)((ulong)head >> 32);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* SlotAt(int index) => _start + ((nuint)(uint)index * _slotSize);

    private void ValidateSize(nuint size)
    {
        if (size == 0 || size > _slotSize)
        {
            ThrowSizeOutOfRange(size);
        }
    }

    // Rare: once, after Dispose, when the last slot comes back.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReleaseRegionOnceSlow()
    {
        if (Interlocked.Exchange(ref _regionReleased, 1) == 0)
        {
            _backing.Release(_start, _regionSize);
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowSizeOutOfRange(nuint size) =>
        throw new ArgumentOutOfRangeException(nameof(size), size, $"A request to this arena must be between 1 and its slot size ({_slotSize} bytes).");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowExhausted(nuint size) =>
        throw new MemorySourceExhaustedException(nameof(ArenaMemorySource), size, $"all {_slotCount} slots are out.");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNotOwned(byte* region) =>
        throw new ArgumentException($"The address 0x{(nuint)region:X} is not in this arena's region.", nameof(region));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNotSlotStart(byte* region) =>
        throw new ArgumentException($"The address 0x{(nuint)region:X} is inside this arena but not at the start of a slot (slots are {_slotSize} bytes).", nameof(region));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowAlreadyFree(byte* region) =>
        throw new ArgumentException($"The slot at 0x{(nuint)region:X} is already free in this arena (double release).", nameof(region));
}
