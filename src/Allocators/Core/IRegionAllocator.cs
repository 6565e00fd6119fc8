namespace AllocHosting.Allocators;

/// <summary>An allocator that hands out memory from one contiguous region (the seed's <c>LocalAllocator</c>).</summary>
public interface IRegionAllocator : IAllocator
{
    /// <summary>The region blocks are carved from; <see cref="IAllocator.Owns"/> tests this range.</summary>
    MemoryRange Range { get; }
}
