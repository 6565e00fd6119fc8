using System.Buffers;

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
/// construction, and later disposes do nothing.
/// </para>
/// <code>
/// byte* block = allocator.Allocate(1024, 16);
/// using var owner = new NativeMemoryManager(allocator, block, 1024, 16);
/// Memory&lt;byte&gt; memory = owner.Memory;   // valid until owner is disposed
/// </code>
/// <para>
/// After dispose <see cref="RetirableMemoryManager{T}.GetSpan"/>, <see cref="RetirableMemoryManager{T}.Pin"/>,
/// <see cref="RetirableMemoryManager{T}.Memory"/> and the <c>Span</c> of any <see cref="Memory{T}"/>
/// taken from the manager throw <see cref="ObjectDisposedException"/> (see
/// <see cref="RetirableMemoryManager{T}"/>), so a stale <see cref="Memory{T}"/> never reads memory
/// that now belongs to someone else.
/// </para>
/// <para>
/// The manager has no finaliser: an owner that is never disposed leaks its block (the garbage
/// collector does not know about native memory), and freeing from the finaliser thread would be
/// unsafe for allocators that are not thread-safe.
/// </para>
/// </remarks>
public sealed unsafe class NativeMemoryManager : RetirableMemoryManager<byte>
{
    // Invariant: the base's memory is a block of _allocator allocated with _alignment (or the
    // zero-size sentinel when the length is 0) until the manager's life ends, and only the thread
    // that ended it (Retire returned true) may free.
    private readonly IAllocator _allocator;
    private readonly nuint _alignment;

    // Serialises the free with the pool's allocations when the pool was asked to; null otherwise.
    private readonly Lock? _allocatorLock;

    /// <summary>Creates a manager that takes ownership of a block of <paramref name="allocator"/>.</summary>
    /// <param name="allocator">The allocator the block came from; it frees the block when the manager is disposed.</param>
    /// <param name="pointer">The block's address (may be the zero-size sentinel or null when <paramref name="length"/> is zero).</param>
    /// <param name="length">The block's size in bytes, which is also the length of <see cref="RetirableMemoryManager{T}.Memory"/>.</param>
    /// <param name="alignment">The alignment the block was allocated with (passed back on free).</param>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null, or <paramref name="pointer"/> is null while <paramref name="length"/> is positive.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two, or <paramref name="pointer"/> is not aligned to it.</exception>
    public NativeMemoryManager(IAllocator allocator, byte* pointer, int length, nuint alignment)
        : this(allocator, pointer, length, alignment, allocatorLock: null)
    {
    }

    internal NativeMemoryManager(IAllocator allocator, byte* pointer, int length, nuint alignment, Lock? allocatorLock)
        : base(Validated(allocator, pointer, length, alignment), length)
    {
        _allocator = allocator;
        _alignment = alignment;
        _allocatorLock = allocatorLock;
    }

    /// <summary>Frees the block back to its allocator the first time it is called; later calls do nothing.</summary>
    /// <param name="disposing">Whether called from <see cref="IDisposable.Dispose"/> (always, as the manager has no finaliser).</param>
    protected override void Dispose(bool disposing)
    {
        if (!Retire())
        {
            return;
        }

        byte* pointer = Start;
        if (_allocatorLock is null)
        {
            _allocator.Deallocate(pointer, (nuint)Length, _alignment);
            return;
        }

        lock (_allocatorLock)
        {
            _allocator.Deallocate(pointer, (nuint)Length, _alignment);
        }
    }

    private protected override ObjectDisposedException CreateEndedException() =>
        new(nameof(NativeMemoryManager), "The native memory behind this Memory<byte> was freed (its owner was disposed); it must no longer be used.");

    // Checks the constructor's arguments before the base stores the pointer; returns the pointer.
    private static byte* Validated(IAllocator allocator, byte* pointer, int length, nuint alignment)
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

        return pointer;
    }
}
