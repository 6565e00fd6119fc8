using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of bytes as an <see cref="IAllocator"/> (the seed's
/// <c>AllocToAllocatorAdaptor</c>, which could not be constructed there, W-AD2): code written
/// against <see cref="IAllocator"/> can take its memory from <see cref="MemoryPool{T}.Shared"/> or any
/// other pool. Thread-safe when the pool is (pools are expected to be).
/// </summary>
/// <remarks>
/// <para>
/// Pools hand out objects, not pointers, so every allocation rents an owner big enough for the
/// request plus alignment padding, pins its memory and returns an aligned address inside it; a
/// table from address to owner (under one lock) lets <see cref="AllocatorBase.Deallocate"/> unpin
/// and dispose the owner. That table also makes the allocator strict: freeing or resizing a pointer
/// that is not a live block (a foreign pointer, a double free) or passing another size or alignment
/// than the block has throws <see cref="ArgumentException"/> and changes nothing.
/// </para>
/// <code>
/// using var allocator = new MemoryPoolAllocator(MemoryPool&lt;byte&gt;.Shared);
/// byte* block = allocator.Allocate(1000, 64);
/// block = allocator.GrowingReallocate(block, 1000, 1500, 64); // in place when the rented buffer has room
/// allocator.Deallocate(block, 1500, 64);
/// </code>
/// <para>
/// <b>Sizes.</b> A request of <c>size</c> bytes aligned to <c>alignment</c> rents
/// <c>size + alignment - 1</c> bytes. When that exceeds <see cref="int.MaxValue"/> or the pool's
/// <see cref="MemoryPool{T}.MaxBufferSize"/>, the request cannot be met by one buffer and is refused
/// as exhaustion (<see cref="AllocatorExhaustedException"/> from <c>Allocate</c>,
/// <see langword="false"/> from the <c>Try</c> forms), as is an <see cref="OutOfMemoryException"/> from
/// the pool. <see cref="AllocatorBase.GetUsableSize"/> reports the request itself, since what a pool
/// rounds up to is unknown until it rents; but a block grows in place while the rented buffer has
/// room after it, and always shrinks in place.
/// </para>
/// <para>
/// <b>Costs.</b> A lock, a table update and a pool rent per allocation; and the pinned buffers of an
/// array-backed pool stay pinned while allocated, which hinders heap compaction if many live long.
/// Statistics count requested sizes.
/// </para>
/// <para>
/// <b>Dispose</b> unpins and returns every outstanding buffer to the pool (their addresses become
/// invalid); afterwards every allocation, free or resize of a non-zero size throws
/// <see cref="ObjectDisposedException"/>, <see cref="Owns"/> answers <see langword="false"/> and
/// <see cref="Statistics"/> stays readable. The pool itself is not disposed.
/// </para>
/// </remarks>
public sealed unsafe class MemoryPoolAllocator : AllocatorBase
{
    private readonly MemoryPool<byte> _pool;

    // Guards _blocks, _counters and _disposed. A block is in the table exactly while its address
    // may be used: from the end of AllocateCore to the start of DeallocateCore.
    private readonly Lock _lock = new();
    private readonly LiveBlockTable<PooledBlock> _blocks = new(nameof(MemoryPoolAllocator));
    private AllocatorCounters _counters;
    private bool _disposed;

    /// <summary>Creates an allocator that rents its blocks from <paramref name="pool"/>.</summary>
    /// <param name="pool">The pool; it must be thread-safe if the allocator is used from several threads. It is not disposed with the allocator.</param>
    /// <exception cref="ArgumentNullException"><paramref name="pool"/> is null.</exception>
    public MemoryPoolAllocator(MemoryPool<byte> pool)
    {
        ArgumentNullException.ThrowIfNull(pool);
        _pool = pool;
    }

    /// <summary>The pool blocks are rented from.</summary>
    public MemoryPool<byte> Pool => _pool;

    /// <inheritdoc />
    public override AllocatorStatistics Statistics
    {
        get
        {
            lock (_lock)
            {
                return _counters.ToStatistics(null, FailureCount);
            }
        }
    }

    /// <summary>Whether <paramref name="pointer"/> is the address of a live block (interior addresses are not recognised).</summary>
    public override bool Owns(byte* pointer)
    {
        lock (_lock)
        {
            return _blocks.Contains(pointer);
        }
    }

    /// <inheritdoc />
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed), this);

        // Any address the pool returns is at most alignment - 1 bytes short of an aligned one.
        // size <= Allocator.MaximumSize and alignment <= Allocator.MaximumAlignment, so no overflow.
        nuint needed = size + alignment - 1;
        if (needed > (nuint)int.MaxValue || needed > (nuint)Math.Max(_pool.MaxBufferSize, 0))
        {
            return null;
        }

        IMemoryOwner<byte>? owner = TryRent((int)needed);
        if (owner is null)
        {
            return null;
        }

        Memory<byte> memory = owner.Memory;
        if (memory.Length < (int)needed)
        {
            owner.Dispose();
            ThrowShortBuffer(needed, memory.Length);
        }

        MemoryHandle handle = memory.Pin();
        nuint start = (nuint)handle.Pointer;
        nuint aligned = Allocator.AlignUp(start, alignment);
        var block = new PooledBlock(owner, handle, size, alignment, (nuint)memory.Length - (aligned - start));
        lock (_lock)
        {
            if (_disposed)
            {
                block.Release();
                ObjectDisposedException.ThrowIf(true, this);
            }

            _blocks.Set((byte*)aligned, block);
            _counters.Allocated(size, size);
        }

        return (byte*)aligned;
    }

    /// <inheritdoc />
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        PooledBlock block;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            block = _blocks.Remove(pointer, size, alignment);
            _counters.Freed(size);
        }

        // Unpinning and returning the buffer need not hold up other threads.
        block.Release();
    }

    /// <summary>Grows the block when the rented buffer has room after it.</summary>
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ref PooledBlock block = ref _blocks.Find(pointer, currentSize, alignment);
            if (newSize > block.Room)
            {
                return false;
            }

            block.Size = newSize;
            _counters.Resized((long)newSize - (long)currentSize);
            return true;
        }
    }

    /// <summary>Always shrinks in place: the block keeps its rented buffer until freed.</summary>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ref PooledBlock block = ref _blocks.Find(pointer, currentSize, alignment);
            block.Size = newSize;
            _counters.Resized((long)newSize - (long)currentSize);
            return true;
        }
    }

    /// <summary>Returns every outstanding buffer to the pool; further operations throw <see cref="ObjectDisposedException"/>.</summary>
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            ReleaseOutstanding();
        }

        base.Dispose(disposing);
    }

    private void ReleaseOutstanding()
    {
        PooledBlock[] outstanding;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            outstanding = [.. _blocks.RemoveAll().Select(static entry => entry.Value)];
            foreach (var block in outstanding)
            {
                _counters.Freed(block.Size);
            }
        }

        foreach (var block in outstanding)
        {
            block.Release();
        }
    }

    private IMemoryOwner<byte>? TryRent(int size)
    {
        try
        {
            return _pool.Rent(size);
        }
        catch (OutOfMemoryException)
        {
            return null;
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowShortBuffer(nuint needed, int length) =>
        throw new InvalidOperationException(
            $"The memory pool returned {length} bytes for a request of {needed}; a pool must return at least the size asked for.");

    // One rented, pinned buffer and the block carved from it. Room is the number of bytes from the
    // block's (aligned) address to the end of the buffer: the block can grow in place up to it.
    // Every call for the block must pass exactly its size and alignment.
    private struct PooledBlock(IMemoryOwner<byte> owner, MemoryHandle handle, nuint size, nuint alignment, nuint room) : ILiveBlock
    {
        public readonly IMemoryOwner<byte> Owner = owner;
        public readonly nuint Alignment = alignment;
        public readonly nuint Room = room;
        public nuint Size = size;
        private MemoryHandle _handle = handle;

        public readonly bool Fits(nuint size, nuint alignment) => size == Size && alignment == Alignment;

        [DoesNotReturn]
        public readonly void ThrowMismatch(void* pointer, nuint size, nuint alignment) =>
            Allocator.ThrowBlockMismatch(pointer, Size, Alignment, size, alignment);

        public void Release()
        {
            _handle.Dispose();
            Owner.Dispose();
        }
    }
}
