using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

// Growing and shrinking: a slab block grows or shrinks in place within its class's block size,
// and moves between classes, or between the slabs and the fallback, when its new size requires;
// a fallback block stays with the fallback unless a shrink brings it into a slab class.
// Threading: as allocation and free; any thread, the block's page may belong to another thread's heap.
public sealed unsafe partial class ThreadLocalAllocator
{
    // ---- Resizing. ----

    /// <inheritdoc />
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment)
    {
        int classIndex = SlabClassOf(size, alignment);
        return classIndex >= 0 ? (nuint)SlabSizeClasses.SizeOf(classIndex) : _fallback.GetUsableSize(size, alignment);
    }

    /// <inheritdoc />
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        SlabPage? page = FindPage((nuint)pointer, currentSize);
        if (page is not null)
        {
            return newSize <= page.BlockSize;
        }

        return _fallback.TryGrowInPlace(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    /// <remarks>A slab block keeps its page when shrunk in place; <see cref="AllocatorBase.ShrinkingReallocate"/> moves it to a smaller class when that at least halves it.</remarks>
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (FindPage((nuint)pointer, currentSize) is not null)
        {
            return true;
        }

        return _fallback.TryShrinkInPlace(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        SlabPage? page = FindPage((nuint)pointer, currentSize);
        if (page is not null)
        {
            return newSize <= page.BlockSize ? pointer : MoveBlock(pointer, currentSize, newSize, alignment);
        }

        // A fallback block stays there (mremap moves pages, not bytes).
        return _fallback.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out byte* moved) ? moved : null;
    }

    /// <inheritdoc />
    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        SlabPage? page = FindPage((nuint)pointer, currentSize);
        int classIndex = SlabClassOf(newSize, alignment);
        if (page is not null)
        {
            if (classIndex < 0 || (nuint)SlabSizeClasses.SizeOf(classIndex) * 2 > page.BlockSize)
            {
                return pointer;
            }

            // Best effort: when no smaller block can be had the block simply stays where it is.
            byte* smaller = AllocateSlab(classIndex, newSize);
            return smaller is null ? pointer : Move(pointer, smaller, newSize, currentSize, alignment);
        }

        if (classIndex >= 0)
        {
            byte* slab = AllocateSlab(classIndex, newSize);
            if (slab is not null)
            {
                return Move(pointer, slab, newSize, currentSize, alignment);
            }
        }

        return _fallback.ShrinkingReallocate(pointer, currentSize, newSize, alignment);
    }

    private byte* Move(byte* from, byte* to, nuint newSize, nuint currentSize, nuint alignment)
    {
        NativeMemory.Copy(from, to, Math.Min(newSize, currentSize));
        DeallocateCore(from, currentSize, alignment);
        return to;
    }
}
