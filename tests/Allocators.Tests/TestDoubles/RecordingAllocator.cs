namespace AllocHosting.Allocators.Tests.TestDoubles;

/// <summary>
/// A thread-safe allocator over a tracking <see cref="NativeMemoryAllocator"/> that counts which
/// operation it was asked for, to see where a switchable allocator routes a request.
/// </summary>
internal sealed unsafe class RecordingAllocator : AllocatorBase
{
    private readonly NativeMemoryAllocator _inner = new(trackOwnership: true);
    private int _frees;
    private int _grows;
    private int _shrinks;
    private int _inPlaceGrows;
    private int _inPlaceShrinks;

    public int Frees => Volatile.Read(ref _frees);

    public int Grows => Volatile.Read(ref _grows);

    public int Shrinks => Volatile.Read(ref _shrinks);

    public int InPlaceGrows => Volatile.Read(ref _inPlaceGrows);

    public int InPlaceShrinks => Volatile.Read(ref _inPlaceShrinks);

    public override AllocatorStatistics Statistics => _inner.Statistics;

    public override bool Owns(byte* pointer) => _inner.Owns(pointer);

    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        _inner.TryAllocate(size, alignment, out byte* pointer);
        return pointer;
    }

    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        Interlocked.Increment(ref _frees);
        _inner.Deallocate(pointer, size, alignment);
    }

    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        Interlocked.Increment(ref _grows);
        _inner.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out byte* grown);
        return grown;
    }

    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        Interlocked.Increment(ref _shrinks);
        return _inner.ShrinkingReallocate(pointer, currentSize, newSize, alignment);
    }

    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        Interlocked.Increment(ref _inPlaceGrows);
        return _inner.TryGrowInPlace(pointer, currentSize, newSize, alignment);
    }

    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        Interlocked.Increment(ref _inPlaceShrinks);
        return _inner.TryShrinkInPlace(pointer, currentSize, newSize, alignment);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inner.Dispose();
        }

        base.Dispose(disposing);
    }
}
