using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// A <see cref="MemoryManager{T}"/> over native memory whose life ends once: afterwards
/// <see cref="GetSpan"/>, <see cref="Pin"/>, <see cref="Memory"/> and the <c>Span</c> of any
/// <see cref="Memory{T}"/> taken from it throw <see cref="ObjectDisposedException"/>, so a stale
/// <see cref="Memory{T}"/> never reads memory that now belongs to someone else.
/// </summary>
/// <typeparam name="T">The element type.</typeparam>
/// <remarks>
/// <para>
/// The base of <see cref="NativeMemoryManager"/> (whose life ends when it is disposed, freeing its
/// block) and of the managers behind the memory request arenas rent (whose life ends when the
/// arena's chunk is released). It cannot be derived from outside this assembly.
/// </para>
/// <para>
/// A <see cref="Span{T}"/> or pointer obtained before the end is not protected: it must not outlive
/// the owner. Native memory never moves, so a pin holds nothing in place; but a pin says that someone
/// (an asynchronous socket or file operation, typically) may still be using the memory, so the handle
/// <see cref="Pin"/> returns reports its disposal back (<see cref="Unpin"/>), and an owner that
/// reuses the memory can wait until no pin is outstanding (the request arenas do). Checking for the
/// end costs one volatile read per <see cref="GetSpan"/>. Thread-safe: the end may come from any
/// thread, and exactly one caller of the end wins it.
/// </para>
/// </remarks>
public abstract unsafe class RetirableMemoryManager<T> : MemoryManager<T>
    where T : unmanaged
{
    private const int Live = 0;
    private const int Ended = 1;

    // [_start, _start + _length elements) is usable memory while _state is Live; _state moves from
    // Live to Ended exactly once.
    private readonly T* _start;
    private readonly int _length;
    private int _state;

    private protected RetirableMemoryManager(T* start, int length)
    {
        _start = start;
        _length = length;
    }

    /// <summary>The number of elements (the length of <see cref="Memory"/>).</summary>
    public int Length => _length;

    /// <summary>Whether the manager's life has ended (disposed, or its memory released by its owner); its memory must no longer be used.</summary>
    public bool IsDisposed => Volatile.Read(ref _state) != Live;

    /// <summary>The whole memory as <see cref="Memory{T}"/>.</summary>
    /// <exception cref="ObjectDisposedException">The manager's life has ended.</exception>
    public sealed override Memory<T> Memory
    {
        get
        {
            ThrowIfEnded();
            return CreateMemory(_length);
        }
    }

    /// <summary>The whole memory as a span: the fast path of every <c>Memory&lt;T&gt;.Span</c>.</summary>
    /// <exception cref="ObjectDisposedException">The manager's life has ended.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public sealed override Span<T> GetSpan()
    {
        ThrowIfEnded();
        return new Span<T>(_start, _length);
    }

    /// <summary>
    /// Returns a handle to the element at <paramref name="elementIndex"/>. Native memory never moves;
    /// the handle counts as an outstanding use of the memory until it is disposed (which calls
    /// <see cref="Unpin"/>), so an owner can keep the memory from being reused meanwhile.
    /// </summary>
    /// <param name="elementIndex">An index from 0 to <see cref="Length"/> (inclusive, for an empty slice at the end).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="elementIndex"/> is outside the memory.</exception>
    /// <exception cref="ObjectDisposedException">The manager's life has ended.</exception>
    public sealed override MemoryHandle Pin(int elementIndex = 0)
    {
        if ((uint)elementIndex > (uint)_length)
        {
            ThrowIfEnded();
            ThrowIndexOutOfRange(elementIndex);
        }

        // Counted before the check, so that an owner that ends the life and then finds no pin
        // outstanding knows that every later Pin throws (and undoes its count).
        OnPinned();
        if (Volatile.Read(ref _state) != Live)
        {
            OnUnpinned();
            ThrowEnded();
        }

        return new MemoryHandle(_start + elementIndex, default, this);
    }

    /// <summary>Ends one use that <see cref="Pin"/> began (called by the disposal of the handle it returned); native memory is never moved, so nothing else happens.</summary>
    public sealed override void Unpin() => OnUnpinned();

    /// <summary>Called for every <see cref="Pin"/> that succeeds (before the handle is returned), for an owner that counts outstanding pins.</summary>
    private protected virtual void OnPinned()
    {
    }

    /// <summary>Called for every <see cref="Unpin"/>, also after the end (a handle may outlive the manager's life).</summary>
    private protected virtual void OnUnpinned()
    {
    }

    /// <summary>The first element, for a derived manager that frees the memory when its life ends.</summary>
    private protected T* Start => _start;

    /// <summary>Ends the manager's life.</summary>
    /// <returns><see langword="true"/> for the one call that ended it; <see langword="false"/> when it had already ended.</returns>
    internal bool Retire() => Interlocked.Exchange(ref _state, Ended) == Live;

    /// <summary>The exception for use after the end, saying whose memory it was.</summary>
    private protected abstract ObjectDisposedException CreateEndedException();

    /// <summary>Tries to expose the memory as an array segment: never possible for native memory.</summary>
    protected sealed override bool TryGetArray(out ArraySegment<T> segment)
    {
        segment = default;
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ThrowIfEnded()
    {
        if (Volatile.Read(ref _state) != Live)
        {
            ThrowEnded();
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowEnded() => throw CreateEndedException();

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowIndexOutOfRange(int elementIndex) =>
        throw new ArgumentOutOfRangeException(
            nameof(elementIndex), elementIndex, $"The index must lie between 0 and the length of the block ({_length}).");
}
