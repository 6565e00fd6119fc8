using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// A growable list of unmanaged values in memory of an <see cref="IAllocator"/>: the collection
/// that uses the allocators' excess (its capacity is the usable size of its block, not the size
/// it asked for) and in-place growth (it asks the allocator to grow the block where it lies before
/// it moves the elements).
/// </summary>
/// <typeparam name="T">The element type; unmanaged, so the block holds no references the garbage collector must see.</typeparam>
/// <remarks>
/// <para>
/// <b>Which allocator.</b> A list created without an allocator uses
/// <see cref="SwitchableAllocator.Default"/>, so each of its allocations comes from the allocator
/// the current async flow has chosen: inside a request of an application that called
/// <c>AddSwitchableAllocators</c> with <c>InstallContextAllocator</c> on, the request's arena, and
/// its memory goes with the request. Pass an allocator (the registered
/// <see cref="SwitchableAllocator"/>, a <see cref="BumpAllocator"/>, any other) to choose it.
/// The allocator is asked on every growth, so a list over a <see cref="SwitchableAllocator"/> that
/// grows in another flow than the one that created it takes its new block from that flow's choice;
/// frees and in-place growth always go to the block's owner. In a request, each block must fit
/// one chunk of the request's arena (the switchable path takes no large chunks), so a list larger
/// than <c>InitialArenaSize</c> throws <see cref="AllocatorExhaustedException"/> there.
/// </para>
/// <para>
/// <b>Growth.</b> When an element does not fit, the capacity doubles (at least
/// <see cref="DefaultCapacity"/>, at least what is needed). The list asks the allocator for the usable size of
/// that many bytes and takes the whole of it: the block is requested with, and later freed with,
/// exactly that size, and <see cref="Capacity"/> is that size ÷ <c>sizeof(T)</c>. It then tries
/// <see cref="IAllocator.TryGrowInPlace"/> on its block; only when that is refused does it allocate a
/// new block, copy the <see cref="Count"/> elements (not the whole capacity) and free the old one.
/// Growth that the allocator cannot serve throws <see cref="AllocatorExhaustedException"/> (an
/// <see cref="OutOfMemoryException"/>) and leaves the list unchanged. Pass
/// <c>growInPlace: false</c> to skip the in-place attempt (the benchmark's baseline).
/// </para>
/// <para>
/// <b>Rules.</b> Arguments are checked as <see cref="List{T}"/> checks them and refused with the same
/// exceptions. More than <see cref="int.MaxValue"/> elements (or more than <see cref="Allocator.MaximumSize"/> bytes) throw <see cref="AllocatorExhaustedException"/>, an <see cref="OutOfMemoryException"/> as <see cref="List{T}"/> throws.
/// After <see cref="Dispose"/> every member but <see cref="Dispose"/> throws
/// <see cref="ObjectDisposedException"/>. A reference from the indexer, a span from
/// <see cref="AsSpan"/> or an enumerator is valid until the list next grows, shrinks or is
/// disposed, as with <c>CollectionsMarshal.AsSpan</c>. Not thread-safe.
/// </para>
/// <para>
/// <b>Lifetime.</b> The block is freed by <see cref="Dispose"/> only; there is no finaliser, since a
/// free from the finaliser thread would reach allocators that are not thread-safe. A list whose
/// block came from a <see cref="ContextAllocator"/> (given directly, or chosen by a
/// <see cref="SwitchableAllocator"/>: a request's arena) records that allocator's current use. When
/// the use ends (the request ends, the context allocator is reset or disposed) the memory goes back
/// with it, and the list behaves as disposed: every member but <see cref="Dispose"/> throws
/// <see cref="ObjectDisposedException"/>, and <see cref="Dispose"/> frees nothing, so a list that
/// outlived its request can neither read nor write the memory that serves another request now, nor free
/// that request's blocks. (References and spans taken before the end are not checked, as for any span.)
/// </para>
/// </remarks>
public sealed unsafe class NativeList<T> : IDisposable
    where T : unmanaged
{
    /// <summary>The capacity the first growth of an empty list asks for (before the allocator's excess).</summary>
    public const int DefaultCapacity = 4;

    // The alignment of every block: the largest power of two dividing sizeof(T) (which the element's
    // own alignment divides), at most 16, the alignment malloc gives.
    private static readonly nuint ElementAlignment = Math.Min((nuint)(sizeof(T) & -sizeof(T)), 16);

    // The most elements a list holds: int.MaxValue, or fewer when their bytes would exceed
    // Allocator.MaximumSize (the largest request any allocator accepts).
    private static readonly int MaxCapacity = (int)Math.Min((nuint)int.MaxValue, Allocator.MaximumSize / (nuint)sizeof(T));

    private readonly IAllocator _allocator;
    private readonly bool _growInPlace;

    // Invariants: [0, _count) initialised; _capacity = min(_bytes / sizeof(T), MaxCapacity); _items is
    // a block of exactly _bytes bytes from _allocator (null when _bytes is 0, then nothing is
    // allocated); _count <= _capacity. After Dispose every field is zero and _disposed is set.
    private T* _items;
    private nuint _bytes;
    private int _count;
    private int _capacity;
    private bool _disposed;

    // The context allocator that owns the block when it is one (directly or behind a switchable
    // allocator: a request's arena chunk), with its generation when the block was taken. Once the
    // owner's generation moves on, the block went back with its use (the request ended, the context
    // was reset or disposed): the list then behaves as disposed and frees nothing. Null otherwise.
    private ContextAllocator? _owner;
    private int _generation;

    // What Add's inlined path may fill up to with one compare: _capacity for a list no context owns, 0
    // for one a context owns (its appends then check the capacity and the owner's generation, still
    // inline), so the inlined path of the common list reads no more than before owners were tracked.
    private int _appendLimit;

    /// <summary>Creates an empty list over <see cref="SwitchableAllocator.Default"/> (the current flow's allocator); nothing is allocated until the first element.</summary>
    public NativeList()
        : this(SwitchableAllocator.Default)
    {
    }

    /// <summary>Creates a list over <see cref="SwitchableAllocator.Default"/> with room for at least <paramref name="capacity"/> elements.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is negative.</exception>
    /// <exception cref="OutOfMemoryException">The allocator cannot serve that many elements (<see cref="AllocatorExhaustedException"/>).</exception>
    public NativeList(int capacity)
        : this(SwitchableAllocator.Default, capacity)
    {
    }

    /// <summary>Creates a list over <paramref name="allocator"/> with room for at least <paramref name="capacity"/> elements.</summary>
    /// <param name="allocator">Where the elements live; the list never disposes it.</param>
    /// <param name="capacity">Elements to make room for now; 0 allocates nothing.</param>
    /// <param name="growInPlace">
    /// Whether growth first asks the allocator to grow the block in place
    /// (<see cref="IAllocator.TryGrowInPlace"/>); <see langword="false"/> always moves, the baseline
    /// the benchmarks compare with. Default <see langword="true"/>.
    /// </param>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is negative.</exception>
    /// <exception cref="OutOfMemoryException">The allocator cannot serve that many elements (<see cref="AllocatorExhaustedException"/>).</exception>
    public NativeList(IAllocator allocator, int capacity = 0, bool growInPlace = true)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        _allocator = allocator;
        _growInPlace = growInPlace;
        if (capacity > 0)
        {
            GrowSlow(capacity);
        }
    }


    /// <summary>The allocator the elements live in.</summary>
    public IAllocator BackingAllocator => _allocator;

    /// <summary>Whether growth first tries to grow the block in place (the constructor's <c>growInPlace</c>).</summary>
    public bool GrowsInPlace => _growInPlace;

    /// <summary>The number of elements.</summary>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public int Count
    {
        get
        {
            ThrowIfDisposed();
            return _count;
        }
    }

    /// <summary>
    /// The number of elements the current block holds: its usable size ÷ <c>sizeof(T)</c> (the
    /// allocator's excess included), at most <see cref="int.MaxValue"/>.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public int Capacity
    {
        get
        {
            ThrowIfDisposed();
            return _capacity;
        }
    }

    /// <summary>A reference to the element at <paramref name="index"/>, valid until the list next grows, shrinks or is disposed.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is negative or not less than <see cref="Count"/>.</exception>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public ref T this[int index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            // After Dispose _count is 0, so every index takes the throw path, which names the disposal.
            if ((uint)index >= (uint)_count)
            {
                ThrowIndexOutOfRange(index, nameof(index));
            }

            if (_owner is { } owner && owner.Generation != _generation)
            {
                ThrowReleased();
            }

            return ref _items[index];
        }
    }

    /// <summary>Adds <paramref name="item"/> at the end, growing the block when it is full.</summary>
    /// <exception cref="OutOfMemoryException">The list holds <see cref="int.MaxValue"/> elements, or the allocator is exhausted; the list is unchanged.</exception>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(T item)
    {
        int count = _count;
        if ((uint)count < (uint)_appendLimit
            || ((uint)count < (uint)_capacity && _owner is { } owner && owner.Generation == _generation))
        {
            _items[count] = item;
            _count = count + 1;
            return;
        }

        AddSlow(item);
    }

    /// <summary>Adds every element of <paramref name="items"/> at the end, growing the block at most once.</summary>
    /// <exception cref="OutOfMemoryException">The elements would exceed <see cref="int.MaxValue"/>, or the allocator is exhausted; the list is unchanged.</exception>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public void AddRange(ReadOnlySpan<T> items)
    {
        ThrowIfDisposed();
        if (items.IsEmpty)
        {
            return;
        }

        int count = _count;
        if (items.Length > _capacity - count)
        {
            GrowSlow(RequiredCapacity((long)count + items.Length));
        }

        items.CopyTo(new Span<T>(_items + count, items.Length));
        _count = count + items.Length;
    }

    /// <summary>Inserts <paramref name="item"/> at <paramref name="index"/>, moving the elements from there one place up.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is negative or greater than <see cref="Count"/>.</exception>
    /// <exception cref="OutOfMemoryException">The list holds <see cref="int.MaxValue"/> elements, or the allocator is exhausted; the list is unchanged.</exception>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public void Insert(int index, T item)
    {
        ThrowIfDisposed();
        int count = _count;
        if ((uint)index > (uint)count)
        {
            ThrowIndexOutOfRange(index, nameof(index));
        }

        if (count == _capacity)
        {
            GrowSlow(RequiredCapacity((long)count + 1));
        }

        if (index < count)
        {
            new Span<T>(_items + index, count - index).CopyTo(new Span<T>(_items + index + 1, count - index));
        }

        _items[index] = item;
        _count = count + 1;
    }

    /// <summary>Removes the element at <paramref name="index"/>, moving the elements after it one place down. The block keeps its size.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is negative or not less than <see cref="Count"/>.</exception>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public void RemoveAt(int index)
    {
        ThrowIfDisposed();
        int count = _count;
        if ((uint)index >= (uint)count)
        {
            ThrowIndexOutOfRange(index, nameof(index));
        }

        int after = count - index - 1;
        if (after > 0)
        {
            new Span<T>(_items + index + 1, after).CopyTo(new Span<T>(_items + index, after));
        }

        _count = count - 1;
    }

    /// <summary>Removes every element; the block keeps its size (see <see cref="TrimExcess"/>).</summary>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public void Clear()
    {
        ThrowIfDisposed();
        _count = 0;
    }

    /// <summary>Makes room for at least <paramref name="capacity"/> elements (doubling when that is more), and returns the new <see cref="Capacity"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is negative.</exception>
    /// <exception cref="OutOfMemoryException">The allocator cannot serve that many elements (<see cref="AllocatorExhaustedException"/>); the list is unchanged.</exception>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public int EnsureCapacity(int capacity)
    {
        ThrowIfDisposed();
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        if (capacity > _capacity)
        {
            GrowSlow(capacity);
        }

        return _capacity;
    }

    /// <summary>
    /// Gives back the excess when fewer than 90% of <see cref="Capacity"/> is used (the threshold
    /// <see cref="List{T}.TrimExcess"/> uses): an empty list frees its block, another shrinks it to
    /// the usable size of its elements through <see cref="IAllocator.ShrinkingReallocate"/>, in place
    /// where the allocator can.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public void TrimExcess()
    {
        ThrowIfDisposed();
        int count = _count;
        if (count >= (int)(_capacity * 0.9))
        {
            return;
        }

        if (count == 0)
        {
            FreeBlock();
            return;
        }

        nuint bytes = _allocator.GetUsableSize((nuint)count * (nuint)sizeof(T), ElementAlignment);
        if (bytes >= _bytes)
        {
            return;
        }

        _items = (T*)_allocator.ShrinkingReallocate((byte*)_items, _bytes, bytes, ElementAlignment);
        SetBlockSize(bytes);
        Bind();
    }

    /// <summary>The elements as a span, valid until the list next grows, shrinks or is disposed.</summary>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public Span<T> AsSpan()
    {
        ThrowIfDisposed();
        return new Span<T>(_items, _count);
    }

    /// <summary>Enumerates the elements by reference (a span enumerator), for <see langword="foreach"/>; do not change the list meanwhile.</summary>
    /// <exception cref="ObjectDisposedException">The list was disposed.</exception>
    public Span<T>.Enumerator GetEnumerator() => AsSpan().GetEnumerator();

    /// <summary>
    /// Frees the block into its allocator. Later calls do nothing; every other member then throws
    /// <see cref="ObjectDisposedException"/>. A list whose memory already went back with its request
    /// or context (see the type's remarks) frees nothing.
    /// </summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _count = 0;
        FreeBlock();
    }

    // The capacity a growth to `needed` elements asks for, or the overflow exception.
    private static int RequiredCapacity(long needed)
    {
        if (needed > MaxCapacity)
        {
            ThrowTooManyElements(needed);
        }

        return (int)needed;
    }

    // A list a context owns (checked here), or a full one (grown here).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddSlow(T item)
    {
        ThrowIfDisposed();
        int count = _count;
        if (count == _capacity)
        {
            GrowSlow(RequiredCapacity((long)count + 1));
        }

        _items[count] = item;
        _count = count + 1;
    }

    // Grows the block to hold at least `minimum` (> _capacity) elements: twice the capacity when that
    // is more, then the allocator's usable size of it; in place first when allowed, else allocate,
    // copy the elements, free. Throws (list unchanged) when the allocator is exhausted.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GrowSlow(int minimum)
    {
        if (minimum > MaxCapacity)
        {
            ThrowTooManyElements(minimum);
        }

        long doubled = _capacity == 0 ? DefaultCapacity : 2L * _capacity;
        int target = (int)Math.Min(Math.Max(doubled, minimum), MaxCapacity);
        nuint wanted = (nuint)target * (nuint)sizeof(T);

        // The excess: the whole usable size is requested (and later freed) as the block's size, so
        // the size the list records is the size the allocator recorded, whichever allocator of a
        // switchable one serves it. (Never less than asked, whatever an allocator answers.)
        nuint bytes = Math.Max(_allocator.GetUsableSize(wanted, ElementAlignment), wanted);
        if (_growInPlace && _bytes != 0 && _allocator.TryGrowInPlace((byte*)_items, _bytes, bytes, ElementAlignment))
        {
            SetBlockSize(bytes);
            return;
        }

        byte* moved = _allocator.Allocate(bytes, ElementAlignment);
        if (_bytes != 0)
        {
            Buffer.MemoryCopy(_items, moved, bytes, (nuint)_count * (nuint)sizeof(T));
            Free(_items, _bytes);
        }

        _items = (T*)moved;
        SetBlockSize(bytes);
        Bind();
    }

    // Records the owner of the new block when it is a context allocator, and the use it belongs to.
    // Behind a switchable allocator the owner is found by address, as its frees are routed.
    private void Bind()
    {
        ContextAllocator? owner = _allocator as ContextAllocator;
        if (owner is null && _allocator is SwitchableAllocator && _items != null)
        {
            owner = OwnerRegistry.Find((nuint)_items) as ContextAllocator;
        }

        _owner = owner;
        _generation = owner?.Generation ?? 0;
        _appendLimit = owner is null ? _capacity : 0;
    }

    // Frees a block of the list: through its owner only while it still belongs to the recorded use.
    private void Free(T* items, nuint bytes)
    {
        if (_owner is { } owner)
        {
            owner.DeallocateInGeneration(_generation, (byte*)items, bytes, ElementAlignment);
        }
        else
        {
            _allocator.Deallocate((byte*)items, bytes, ElementAlignment);
        }
    }

    private void SetBlockSize(nuint bytes)
    {
        _bytes = bytes;
        _capacity = (int)Math.Min(bytes / (nuint)sizeof(T), (nuint)MaxCapacity);
        _appendLimit = _owner is null ? _capacity : 0;
    }

    private void FreeBlock()
    {
        T* items = _items;
        nuint bytes = _bytes;
        _items = null;
        _bytes = 0;
        _capacity = 0;
        _appendLimit = 0;
        if (bytes != 0)
        {
            Free(items, bytes);
        }

        _owner = null;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ThrowIfDisposed()
    {
        if (_disposed)
        {
            ThrowDisposed();
        }

        if (_owner is { } owner && owner.Generation != _generation)
        {
            ThrowReleased();
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowReleased() =>
        throw new ObjectDisposedException(
            typeof(NativeList<T>).Name,
            "The NativeList's memory went back with the request or context allocator it was allocated in (the request ended, or the context allocator was reset or disposed); a list must not outlive the context that holds its memory.");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowDisposed() =>
        throw new ObjectDisposedException(typeof(NativeList<T>).Name, "The NativeList was disposed: its block went back to its allocator.");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowIndexOutOfRange(int index, string parameterName)
    {
        ThrowIfDisposed();
        throw new ArgumentOutOfRangeException(parameterName, index, $"The index must be between 0 and the count ({_count}), which it may equal only for Insert.");
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowTooManyElements(long needed) =>
        throw new AllocatorExhaustedException($"A NativeList<{typeof(T).Name}> holds at most {MaxCapacity} elements; {needed} were needed.");
}
