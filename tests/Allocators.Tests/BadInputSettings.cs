using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Which bad inputs each allocator of <see cref="AllocatorFactories"/> refuses, and so which the
/// model draws for it. A kind left out is one the allocator's contract documents as tolerated; the
/// comment says where.
/// </summary>
public static class BadInputSettings
{
    /// <summary>The model settings of the bad-input test of the allocator <paramref name="kind"/>.</summary>
    public static ModelSettings For(string kind) => new()
    {
        BadInputWeight = 2,
        HugeGrowWeight = 1,
        // Memory map blocks span several pages, so that a smaller size can map fewer.
        MaxSize = kind == "memorymap" ? 20_000 : 2048,
        MaxAlignmentLog2 = 6,
        MaxSteps = 100,
        Iterations = 60,
        RefusedBadInputs = Refused(kind),
    };

    /// <summary>The bad inputs the allocator <paramref name="kind"/> refuses.</summary>
    public static BadInput Refused(string kind) => kind switch
    {
        // BumpAllocator's remarks: only the most recent block is known; a bad free of an older block
        // (a double free, an interior pointer, a size within the part handed out) is accepted and
        // ignored, so only memory outside the region is refused whatever the block. The alignment
        // is not recorded (a free needs none).
        "bump" or "context-short" or "context-short-concurrent" => BadInput.ForeignPointer,

        // Allocators that keep each block's exact size and alignment refuse every kind.
        "native-tracked" or "memorypool" => BadInput.All,

        // ThreadLocalAllocator's remarks: a slab block is known by its page, whose class size bounds
        // the size passed from above only (a block shrunk in place keeps its class), so a smaller
        // size is tolerated; no allocator but the tracking ones records a block's alignment, which
        // IAllocator documents as checked only where recorded.
        // A SwitchableAllocator routes each block to its owner: its small blocks come from its
        // thread-local allocator, with that allocator's tolerances (its global allocator, a tracking
        // NativeMemoryAllocator, would refuse them).
        "threadlocal" or "switchable" => BadInput.All & ~(BadInput.SmallerSize | BadInput.WrongAlignment),

        // MemoryMapAllocator keeps each block's mapped size and acts on it: any size up to it names
        // the block (the MappedBlock comment: a thread-local allocator's fallback blocks are mapped
        // with their class size), so a smaller size is tolerated; the alignment is not recorded.
        "memorymap" => BadInput.All & ~(BadInput.SmallerSize | BadInput.WrongAlignment),

        // Region allocators (bit set, tree, and their context forms): the alignment is not recorded
        // (IAllocator's remarks); sizes are checked against the block's run or size class.
        _ => BadInput.All & ~BadInput.WrongAlignment,
    };
}
