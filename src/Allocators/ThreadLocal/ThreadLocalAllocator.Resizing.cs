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
        SlabPage? page = FindLivePage((nuint)pointer, currentSize);
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
        if (FindLivePage((nuint)pointer, currentSize) is not null)
        {
            return true;
        }

        return _fallback.TryShrinkInPlace(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        SlabPage? page = FindLivePage((nuint)pointer, currentSize);
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
        SlabPage? page = FindLivePage((nuint)pointer, currentSize);
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
            // The fallback's block is checked before a slab block is taken for it: a foreign pointer
            // or wrong size must be refused with nothing allocated (Move frees the old block last).
            ValidateFallbackBlock(pointer, currentSize);
            byte* slab = AllocateSlab(classIndex, newSize);
            if (slab is not null)
            {
                return Move(pointer, slab, newSize, currentSize, alignment);
            }
        }

        return _fallback.ShrinkingReallocate(pointer, currentSize, newSize, alignment);
    }

    // FindPage for a resize: a slab block that carries its free stamp is refused as well (the free
    // path checks the stamp as it writes it; a resize, which writes none, checks it here), so that a
    // block already freed is never grown, shrunk or moved. Off the fast paths: one more load.
    private SlabPage? FindLivePage(nuint address, nuint size)
    {
        SlabPage? page = FindPage(address, size);
        if (page is not null && ((nuint*)address)[1] == (_stampKey ^ address))
        {
            Allocator.ThrowNotLive(Name, (void*)address);
        }

        return page;
    }

    // Throws ArgumentException unless pointer is a live block of the fallback that currentSize fits:
    // exactly for the default fallback (its table of blocks), by ownership for any other.
    private void ValidateFallbackBlock(byte* pointer, nuint currentSize)
    {
        if (_fallback is MemoryMapAllocator mapped)
        {
            mapped.ValidateLive(pointer, currentSize);
        }
        else if (!_fallback.Owns(pointer))
        {
            Allocator.ThrowNotOwned(Name, pointer);
        }
    }

    private byte* Move(byte* from, byte* to, nuint newSize, nuint currentSize, nuint alignment)
    {
        NativeMemory.Copy(from, to, Math.Min(newSize, currentSize));
        DeallocateCore(from, currentSize, alignment);
        return to;
    }
}
