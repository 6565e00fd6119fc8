using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// A <see cref="MemoryManager{T}"/> over one block of an <see cref="IAllocator"/>: it turns native
/// memory into <see cref="Memory{T}"/>, and disposing it frees the block back to its allocator.
/// It is the <see cref="IMemoryOwner{T}"/> that <see cref="AllocatorMemoryPool.Rent"/> returns.
/// </summary>
/// <remarks>
/// <para>
/// The manager owns its block: the first dispose (from any thread) calls
/// <see cref="IAllocator.Deallocate"/> with the pointer, length and alignment given at
/// construction, and later disposes do nothing. <see cref="Retire"/> ends the manager's life
/// without freeing, for owners whose memory is released in bulk elsewhere (a request arena that
/// is reset).
/// </para>
/// <code>
/// byte* block = allocator.Allocate(1024, 16);
/// using var owner = new NativeMemoryManager(allocator, block, 1024, 16);
/// Memory&lt;byte&gt; memory = owner.Memory;   // valid until owner is disposed
/// </code>
/// <para>
/// After dispose or retirement <see cref="GetSpan"/>, <see cref="Pin"/>, <see cref="Memory"/> and
/// the <c>Span</c> of any <see cref="Memory{T}"/> taken from the manager throw
/// <see cref="ObjectDisposedException"/>, so a stale <see cref="Memory{T}"/> never reads memory
/// that now belongs to someone else. A <see cref="Span{T}"/> or pointer obtained before that is not
/// protected: it must not outlive the owner. Native memory never moves, so pinning is free and
/// <see cref="Unpin"/> does nothing.
/// </para>
/// <para>
/// The manager has no finaliser: an owner that is never disposed leaks its block (the garbage
/// collector does not know about native memory), and freeing from the finaliser thread would be
/// unsafe for allocators that are not thread-safe.
/// </para>
/// </remarks>
public sealed unsafe class NativeMemoryManager : MemoryManager<byte>
{
    private const int Live = 0;
    private const int Ended = 1;

    // Invariants: _pointer and _length describe a block of _allocator allocated with _alignment
    // (or the zero-size sentinel when _length is 0) while _state is Live. _state moves from Live to
    // Ended exactly once, by Dispose or Retire, and only the thread that moved it may free.
    private readonly IAllocator _allocator;
    private readonly byte* _pointer;
    private readonly int _length;
    private readonly nuint _alignment;

    // Serialises the free with the pool's allocations when the pool was asked to; null otherwise.
    private readonly Lock? _allocatorLock;
    private int _state;

    /// <summary>Creates a manager that takes ownership of a block of <paramref name="allocator"/>.</summary>
    /// <param name="allocator">The allocator the block came from; it frees the block when the manager is disposed.</param>
    /// <param name="pointer">The block's address (may be the zero-size sentinel or null when <paramref name="length"/> is zero).</param>
    /// <param name="length">The block's size in bytes, which is also the length of <see cref="Memory"/>.</param>
    /// <param name="alignment">The alignment the block was allocated with (passed back on free).</param>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null, or <paramref name="pointer"/> is null while <paramref name="length"/> is positive.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two, or <paramref name="pointer"/> is not aligned to it.</exception>
    public NativeMemoryManager(IAllocator allocator, byte* pointer, int length, nuint alignment)
        : this(allocator, pointer, length, alignment, allocatorLock: null)
    {
    }

    internal NativeMemoryManager(IAllocator allocator, byte* pointer, int length, nuint alignment, Lock? allocatorLock)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (!Allocator.IsValidAlignment(alignment))
        {
            Allocator.ThrowInvalidAlignment(alignment);
        }

        if (length > 0)
        {
            if (pointer == null)
            {
                Allocator.ThrowNullPointer();
            }

            if (!Allocator.IsAligned((nuint)pointer, alignment))
            {
                throw new ArgumentException($"The pointer 0x{(nuint)pointer:X} is not aligned to {alignment}.", nameof(pointer));
            }
        }

        _allocator = allocator;
        _pointer = pointer;
        _length = length;
        _alignment = alignment;
        _allocatorLock = allocatorLock;
    }

    /// <summary>The length of the block in bytes (the length of <see cref="Memory"/>).</summary>
    public int Length => _length;

    /// <summary>Whether the manager was disposed or retired; its memory must no longer be used.</summary>
    public bool IsDisposed => Volatile.Read(ref _state) != Live;

    /// <summary>The block as <see cref="Memory{T}"/>.</summary>
    /// <exception cref="ObjectDisposedException">The manager was disposed or retired.</exception>
    public override Memory<byte> Memory
    {
        get
        {
            ThrowIfEnded();
            return CreateMemory(_length);
        }
    }

    /// <summary>The block as a span.</summary>
    /// <exception cref="ObjectDisposedException">The manager was disposed or retired.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public override Span<byte> GetSpan()
    {
        ThrowIfEnded();
        return new Span<byte>(_pointer, _length);
    }

    /// <summary>Returns a handle to the byte at <paramref name="elementIndex"/>; native memory never moves, so nothing is pinned.</summary>
    /// <param name="elementIndex">An offset from 0 to <see cref="Length"/> (inclusive, for an empty slice at the end).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="elementIndex"/> is outside the block.</exception>
    /// <exception cref="ObjectDisposedException">The manager was disposed or retired.</exception>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ThrowIfEnded();
        if ((uint)elementIndex > (uint)_length)
        {
            ThrowIndexOutOfRange(elementIndex);
        }

        return new MemoryHandle(_pointer + elementIndex);
    }

    /// <summary>Does nothing: native memory is never moved by the garbage collector.</summary>
    public override void Unpin()
    {
    }

    /// <summary>
    /// Ends the manager's life without freeing its block: afterwards it behaves as disposed
    /// (<see cref="ObjectDisposedException"/> on use) and disposing it frees nothing. For owners
    /// whose memory is released in bulk by someone else, such as a request arena that is reset.
    /// </summary>
    /// <returns><see langword="true"/> when this call retired the manager; <see langword="false"/> when it was already disposed or retired.</returns>
    public bool Retire() => Interlocked.Exchange(ref _state, Ended) == Live;

    /// <summary>Frees the block back to its allocator the first time it is called; later calls, and calls after <see cref="Retire"/>, do nothing.</summary>
    /// <param name="disposing">Whether called from <see cref="IDisposable.Dispose"/> (always, as the manager has no finaliser).</param>
    protected override void Dispose(bool disposing)
    {
        if (Interlocked.Exchange(ref _state, Ended) != Live)
        {
            return;
        }

        if (_allocatorLock is null)
        {
            _allocator.Deallocate(_pointer, (nuint)_length, _alignment);
            return;
        }

        lock (_allocatorLock)
        {
            _allocator.Deallocate(_pointer, (nuint)_length, _alignment);
        }
    }

    /// <summary>Tries to expose the block as an array segment: never possible for native memory.</summary>
    protected override bool TryGetArray(out ArraySegment<byte> segment)
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
    private static void ThrowEnded() =>
        throw new ObjectDisposedException(
            nameof(NativeMemoryManager),
            "The native memory behind this Memory<byte> was freed (its owner was disposed or retired); it must no longer be used.");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowIndexOutOfRange(int elementIndex) =>
        throw new ArgumentOutOfRangeException(
            nameof(elementIndex), elementIndex, $"The index must lie between 0 and the length of the block ({_length}).");
}
