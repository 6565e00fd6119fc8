namespace AllocHosting.Allocators.Tests.TestDoubles;

/// <summary>
/// Passes every call to an inner allocator and counts the allocations, frees and in-place growths
/// asked for and granted, to see how a collection grows (moves against in-place growths).
/// </summary>
internal sealed unsafe class CountingAllocator(IAllocator inner) : IAllocator
{
    public int Allocations { get; private set; }

    public int Frees { get; private set; }

    public int InPlaceGrowthsAsked { get; private set; }

    public int InPlaceGrowthsGranted { get; private set; }

    public AllocatorStatistics Statistics => inner.Statistics;

    public byte* Allocate(nuint size, nuint alignment)
    {
        Allocations++;
        return inner.Allocate(size, alignment);
    }

    public bool TryAllocate(nuint size, nuint alignment, out byte* pointer)
    {
        Allocations++;
        return inner.TryAllocate(size, alignment, out pointer);
    }

    public byte* AllocateZeroed(nuint size, nuint alignment)
    {
        Allocations++;
        return inner.AllocateZeroed(size, alignment);
    }

    public void Deallocate(byte* pointer, nuint size, nuint alignment)
    {
        Frees++;
        inner.Deallocate(pointer, size, alignment);
    }

    public byte* GrowingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        inner.GrowingReallocate(pointer, currentSize, newSize, alignment);

    public bool TryGrowingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment, out byte* newPointer) =>
        inner.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out newPointer);

    public byte* ShrinkingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        inner.ShrinkingReallocate(pointer, currentSize, newSize, alignment);

    public byte* Reallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        inner.Reallocate(pointer, currentSize, newSize, alignment);

    public bool TryGrowInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        InPlaceGrowthsAsked++;
        bool grown = inner.TryGrowInPlace(pointer, currentSize, newSize, alignment);
        InPlaceGrowthsGranted += grown ? 1 : 0;
        return grown;
    }

    public bool TryShrinkInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        inner.TryShrinkInPlace(pointer, currentSize, newSize, alignment);

    public nuint GetUsableSize(nuint size, nuint alignment) => inner.GetUsableSize(size, alignment);

    public bool Owns(byte* pointer) => inner.Owns(pointer);
}
