namespace AllocHosting.Allocators;

/// <summary>Which allocator a <see cref="ContextAllocator"/> wraps, by the expected lifetime of its context.</summary>
public enum ContextAllocatorKind
{
    /// <summary>A <see cref="BumpAllocator"/>: very fast allocation, frees that only rewind the most recent block, O(1) reset; runs out of memory soonest.</summary>
    ShortLived,

    /// <summary>A <see cref="BitSetAllocator"/>: slower allocation and free than bump, but frees really return memory and reallocation is cheaper.</summary>
    MediumLived,

    /// <summary>A <see cref="MultipleBinarySearchTreeAllocator"/>: size-class free lists with coalescing, for long-lived contexts that free and reallocate a lot.</summary>
    LongLived,
}
