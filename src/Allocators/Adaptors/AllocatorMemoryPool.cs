using System.Buffers;

namespace AllocHosting.Allocators;

/// <summary>
/// Any <see cref="IAllocator"/> as a <see cref="MemoryPool{T}"/> of bytes (the seed's
/// <c>AllocatorAdaptor</c>): every <see cref="Rent"/> allocates one native block and returns it as
/// an <see cref="IMemoryOwner{T}"/> whose dispose frees the block.
/// </summary>
/// <remarks>
/// <para>
/// Use it to hand native memory to code that speaks <see cref="Memory{T}"/>: pipelines, streams,
/// serialisers.
/// </para>
/// <code>
/// using var pool = new AllocatorMemoryPool(NativeMemoryAllocator.Shared);
/// using IMemoryOwner&lt;byte&gt; owner = pool.Rent(16 * 1024);
/// int read = await stream.ReadAsync(owner.Memory);
/// </code>
/// <para>
/// <b>Sizes.</b> The owner's <see cref="IMemoryOwner{T}.Memory"/> is exactly the size asked for (not
/// the allocator's usable size, and not rounded up as <see cref="ArrayPool{T}"/> does), so its length
/// tells the caller nothing new and the block is freed with the size it was allocated with.
/// <c>Rent(-1)</c> (or <c>Rent()</c>) asks for <see cref="DefaultBufferSize"/> bytes, or
/// <see cref="MaxBufferSize"/> if that is smaller. Blocks are aligned to <see cref="Alignment"/>
/// (16 bytes unless chosen otherwise, enough for 128-bit vectors and what <c>malloc</c> gives).
/// </para>
/// <para>
/// <b>Threads.</b> The pool itself keeps no state beyond a disposed flag; it is as thread-safe as its
/// allocator. For an allocator that is not thread-safe, pass <c>synchronized: true</c> and every
/// allocation and free made through the pool takes one lock (frees made directly on the allocator
/// do not, so do not mix the two).
/// </para>
/// <para>
/// <b>What it never does.</b> It never caches blocks (the allocator is the cache), never clears
/// memory unless asked to (<c>clearOnRent</c>), never frees a block its owner did not release, and
/// never disposes the allocator. An owner that is not disposed leaks its block.
/// </para>
/// <para>
/// <b>Dispose</b> marks the pool disposed: further <see cref="Rent"/> calls throw
/// <see cref="ObjectDisposedException"/>, while owners already rented stay valid until each is
/// disposed (their memory belongs to the allocator, not to the pool).
/// </para>
/// </remarks>
public sealed unsafe class AllocatorMemoryPool : MemoryPool<byte>
{
    /// <summary>The size in bytes that <c>Rent(-1)</c> asks for: 4 KiB, one page.</summary>
    public const int DefaultBufferSize = 4096;

    /// <summary>The alignment of rented blocks unless the constructor is told otherwise.</summary>
    public const int DefaultAlignment = 16;

    private readonly IAllocator _allocator;
    private readonly int _maxBufferSize;
    private readonly nuint _alignment;
    private readonly bool _clearOnRent;

    // Non-null when allocations and frees through the pool must be serialised (synchronized: true).
    private readonly Lock? _allocatorLock;
    private int _disposed;

    /// <summary>Creates a pool that rents blocks of <paramref name="allocator"/>.</summary>
    /// <param name="allocator">Where blocks come from and go back to. The pool does not own it.</param>
    /// <param name="maxBufferSize">The largest <see cref="Rent"/> accepted (at least one byte).</param>
    /// <param name="alignment">The alignment of every block, a power of two.</param>
    /// <param name="clearOnRent">Zero every block before handing it out.</param>
    /// <param name="synchronized">Take a lock around every allocation and free, for allocators that are not thread-safe.</param>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxBufferSize"/> is less than one.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two.</exception>
    public AllocatorMemoryPool(
        IAllocator allocator,
        int maxBufferSize = int.MaxValue,
        nuint alignment = DefaultAlignment,
        bool clearOnRent = false,
        bool synchronized = false)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBufferSize, 1);
        if (!Allocator.IsValidAlignment(alignment))
        {
            Allocator.ThrowInvalidAlignment(alignment);
        }

        _allocator = allocator;
        _maxBufferSize = maxBufferSize;
        _alignment = alignment;
        _clearOnRent = clearOnRent;
        _allocatorLock = synchronized ? new Lock() : null;
    }

    /// <summary>The largest size <see cref="Rent"/> accepts.</summary>
    public override int MaxBufferSize => _maxBufferSize;

    /// <summary>The alignment of every rented block.</summary>
    public nuint Alignment => _alignment;

    /// <summary>
    /// Allocates a block of <paramref name="minBufferSize"/> bytes (<see cref="DefaultBufferSize"/>
    /// for -1) and returns its owner, a <see cref="NativeMemoryManager"/>; disposing the owner frees
    /// the block.
    /// </summary>
    /// <param name="minBufferSize">Bytes wanted, from 0 to <see cref="MaxBufferSize"/>, or -1 for the default size.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="minBufferSize"/> is below -1 or above <see cref="MaxBufferSize"/>.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    /// <exception cref="AllocatorExhaustedException">The allocator has no room (an <see cref="OutOfMemoryException"/>).</exception>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        int size = minBufferSize == -1 ? Math.Min(DefaultBufferSize, _maxBufferSize) : minBufferSize;
        if ((uint)size > (uint)_maxBufferSize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(minBufferSize), minBufferSize, $"A buffer size must be -1 (the default size) or between 0 and {_maxBufferSize}.");
        }

        return new NativeMemoryManager(_allocator, Allocate((nuint)size), size, _alignment, _allocatorLock);
    }

    /// <summary>Marks the pool disposed; owners already rented stay valid until they are disposed.</summary>
    /// <param name="disposing">Whether called from <see cref="IDisposable.Dispose"/>.</param>
    protected override void Dispose(bool disposing) => Volatile.Write(ref _disposed, 1);

    private byte* Allocate(nuint size)
    {
        if (_allocatorLock is null)
        {
            return _clearOnRent ? _allocator.AllocateZeroed(size, _alignment) : _allocator.Allocate(size, _alignment);
        }

        lock (_allocatorLock)
        {
            return _clearOnRent ? _allocator.AllocateZeroed(size, _alignment) : _allocator.Allocate(size, _alignment);
        }
    }
}
