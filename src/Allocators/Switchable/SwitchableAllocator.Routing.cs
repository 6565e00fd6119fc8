using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

// Frees and resizes routed by owner: a block goes back to the allocator that owns its address,
// whichever flow or thread frees it and whatever that flow's kind is now (the fix of the seed's
// W-SW2); see "Routing by owner" in the type's remarks.
//
// Threading: any thread. Routing reads only the process-wide owner registry, the thread-local
// allocator's page map and the _recentContext hint, never the flow's state; the owner found is
// called as it would be directly (a context allocator is thread-safe only in its thread-safe forms:
// see the type's remarks).
public sealed unsafe partial class SwitchableAllocator
{
    /// <summary>
    /// Whether <paramref name="pointer"/> lies in memory an allocator reachable by routing hands out:
    /// a registered allocator (context, thread-local, memory map), the thread-local allocator's
    /// fallback, or the global allocator (which, by default, cannot tell and says no).
    /// </summary>
    public override bool Owns(byte* pointer) => OwnerRegistry.Find((nuint)pointer) is { } owner
        ? owner.Owns(pointer)
        : (_unregisteredFallback?.Owns(pointer) ?? false) || _global.Owns(pointer);

    /// <summary>Frees the block into the allocator that owns it, whatever the current kind.</summary>
    /// <remarks>
    /// The likely owners are asked first, each with a check that gives the same answer as the
    /// owner registry: the thread-local allocator through its page map, then the context allocator
    /// installed most recently through its live range (empty once disposed). The current flow's
    /// state is not read here: a thread-static read costs more than these checks. This is the free
    /// fast path; a pointer none of them claims takes the routed slow path.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        if (_slabThreadLocal is { } slab && SlabPageMap.Find((nuint)pointer) is { } page && page.Allocator == slab)
        {
            // The page is known: the thread-local allocator does not look it up again.
            slab.DeallocateInPage(page, pointer, size);
            return;
        }

        if (_recentContext is { } recent)
        {
            if (recent.DirectBump is { } bump)
            {
                if (bump.Owns(pointer))
                {
                    bump.DeallocatePrevalidated(pointer, size, alignment);
                    return;
                }
            }
            else if (TryDeallocateInContextSlow(recent.Context!, pointer, size, alignment))
            {
                return;
            }
        }

        IAllocator? owner = OwnerRegistry.Find((nuint)pointer);
        if (owner is null && _uncheckedNativeGlobal is { } native)
        {
            native.DeallocatePrevalidated(pointer, size, alignment);
        }
        else
        {
            DeallocateRoutedSlow(owner, pointer, size, alignment);
        }
    }

    /// <summary>Grows the block in the allocator that owns it (and, with <see cref="FallBackToGlobal"/>, moves it to the global allocator when the owner cannot).</summary>
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        IAllocator owner = OwnerOf(pointer);
        if (owner.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out byte* grown))
        {
            return grown;
        }

        return FallBackToGlobal && !ReferenceEquals(owner, _global)
            ? MoveToGlobal(owner, pointer, currentSize, newSize, alignment)
            : null;
    }

    /// <summary>Shrinks the block with the shrinking reallocation of the allocator that owns it (W-SW1).</summary>
    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        OwnerOf(pointer).ShrinkingReallocate(pointer, currentSize, newSize, alignment);

    /// <inheritdoc />
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        OwnerOf(pointer).TryGrowInPlace(pointer, currentSize, newSize, alignment);

    /// <inheritdoc />
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        OwnerOf(pointer).TryShrinkInPlace(pointer, currentSize, newSize, alignment);

    // The free path's check of a context allocator that is not a plain bump allocator.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool TryDeallocateInContextSlow(ContextAllocator context, byte* pointer, nuint size, nuint alignment)
    {
        MemoryRange range = context.Range;
        if ((nuint)pointer - range.From >= range.Length)
        {
            return false;
        }

        context.DeallocatePrevalidated(pointer, size, alignment);
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void DeallocateRoutedSlow(IAllocator? owner, byte* pointer, nuint size, nuint alignment)
    {
        IAllocator target = Route(owner, pointer);
        if (target is AllocatorBase validatedByUs)
        {
            validatedByUs.DeallocatePrevalidated(pointer, size, alignment);
        }
        else
        {
            target.Deallocate(pointer, size, alignment);
        }
    }

    private byte* MoveToGlobal(IAllocator owner, byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (!_global.TryAllocate(newSize, alignment, out byte* moved))
        {
            return null;
        }

        NativeMemory.Copy(pointer, moved, currentSize);
        owner.Deallocate(pointer, currentSize, alignment);
        return moved;
    }

    // Routing: a registered pointer goes to its owner (a context allocator, the thread-local
    // allocator for its segments, a memory map allocator for its mappings). An unregistered one goes
    // to the thread-local allocator's unregistered fallback when that owns it, else to the global
    // allocator, which must own it when it can tell.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private IAllocator OwnerOf(byte* pointer) => Route(OwnerRegistry.Find((nuint)pointer), pointer);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private IAllocator Route(IAllocator? owner, byte* pointer) =>
        owner ?? (_checksUnregistered ? FindUnregisteredOwnerSlow(pointer) : _global);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private IAllocator FindUnregisteredOwnerSlow(byte* pointer)
    {
        if (_unregisteredFallback is { } fallback && fallback.Owns(pointer))
        {
            return fallback;
        }

        if (_globalKnowsOwnership && !_global.Owns(pointer))
        {
            ThrowNobodyOwns(pointer);
        }

        return _global;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNobodyOwns(byte* pointer) =>
        throw new ArgumentException(
            $"Nobody owns this pointer (0x{(nuint)pointer:X}): no registered allocator covers it and the global {_global.GetType().Name} did not allocate it (or it was already freed, or its context allocator was disposed).",
            nameof(pointer));
}
