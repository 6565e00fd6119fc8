using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>What one heap of a <see cref="NumaHeapAllocator"/> holds, read under its lock (see <see cref="NumaHeapAllocator.GetHeaps"/>).</summary>
/// <param name="Node">The NUMA node the heap's memory is bound to.</param>
/// <param name="Index">The heap's index in <see cref="NumaHeapAllocator.GetHeaps"/>.</param>
/// <param name="Policy">The NUMA policy of the heap's memory source.</param>
/// <param name="SegmentCount">Segments mapped.</param>
/// <param name="MappedBytes">Bytes of segments mapped (address space).</param>
/// <param name="BytesInUse">Usable bytes of the live blocks.</param>
/// <param name="FreeBytes">Bytes of the blocks on the free lists (headers included; cached blocks not).</param>
/// <param name="FreeBlockCount">Blocks on the free lists.</param>
/// <param name="CachedBlockCount">Freed blocks held in the per-size caches, not yet merged.</param>
/// <param name="LockContentionCount">Times a thread found the heap's lock taken.</param>
public readonly record struct NumaHeapSnapshot(
    int Node,
    int Index,
    NumaPolicy Policy,
    int SegmentCount,
    long MappedBytes,
    long BytesInUse,
    long FreeBytes,
    long FreeBlockCount,
    int CachedBlockCount,
    long LockContentionCount);
