using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests.TestDoubles;

/// <summary>
/// A thread-safe stand-in for the thread-local allocator: a bump allocator behind a lock whose region
/// is registered in <see cref="OwnerRegistry"/> with itself as owner.
/// </summary>
internal sealed unsafe class SynchronizedBumpAllocator : AllocatorBase
{
    private readonly BumpAllocator _inner;
    private readonly Lock _lock = new();

    public SynchronizedBumpAllocator(nuint capacity = 256 * 1024)
    {
        _inner = new BumpAllocator(NativeMemorySource.Shared, capacity);
        OwnerRegistry.Register(_inner.Range.From, _inner.Range.Length, this);
    }

    public MemoryRange Range => _inner.Range;

    public override AllocatorStatistics Statistics
    {
        get
        {
            lock (_lock)
            {
                return _inner.Statistics;
            }
        }
    }

    public override bool Owns(byte* pointer) => _inner.Owns(pointer);

    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        lock (_lock)
        {
            _inner.TryAllocate(size, alignment, out byte* pointer);
            return pointer;
        }
    }

    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        lock (_lock)
        {
            _inner.Deallocate(pointer, size, alignment);
        }
    }

    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        lock (_lock)
        {
            _inner.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out byte* grown);
            return grown;
        }
    }

    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        lock (_lock)
        {
            return _inner.ShrinkingReallocate(pointer, currentSize, newSize, alignment);
        }
    }

    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        lock (_lock)
        {
            return _inner.TryGrowInPlace(pointer, currentSize, newSize, alignment);
        }
    }

    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        lock (_lock)
        {
            return _inner.TryShrinkInPlace(pointer, currentSize, newSize, alignment);
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            OwnerRegistry.Unregister(_inner.Range.From, _inner.Range.Length, this);
            _inner.Dispose();
        }

        base.Dispose(disposing);
    }
}
