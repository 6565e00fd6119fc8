using System.Numerics;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// How a <see cref="NumaHeapAllocator"/> sizes and places its heaps. Immutable once built
/// (init-only properties); every default is stated on its property.
/// </summary>
/// <example><code>
/// using var allocator = new NumaHeapAllocator(new NumaHeapAllocatorOptions
/// {
///     HeapsPerNode = 4,                                   // four locks per node for many threads
///     MemoryMap = new MemoryMapSourceOptions { TransparentHugePages = true },
/// });
/// </code></example>
public sealed record NumaHeapAllocatorOptions
{
    /// <summary>The smallest <see cref="SegmentSize"/>: 1 MiB.</summary>
    public const long MinimumSegmentSize = 1L << 20;

    /// <summary>The largest <see cref="SegmentSize"/>: 1 GiB.</summary>
    public const long MaximumSegmentSize = 1L << 30;

    /// <summary>The default options.</summary>
    public static NumaHeapAllocatorOptions Default { get; } = new();

    /// <summary>
    /// Bytes a heap maps at a time, aligned to their size: a power of two from
    /// <see cref="MinimumSegmentSize"/> to <see cref="MaximumSegmentSize"/>. Default: 4 MiB.
    /// </summary>
    public long SegmentSize { get; init; } = 4L << 20;

    /// <summary>
    /// The largest request the heaps serve; larger ones (and alignments above
    /// <see cref="NumaHeapAllocator.MaximumHeapAlignment"/>) get a mapping of their own on the
    /// calling thread's node. From 1 KiB to a quarter of <see cref="SegmentSize"/>. Default: 1 MiB.
    /// </summary>
    public long MaximumHeapBlockSize { get; init; } = 1L << 20;

    /// <summary>
    /// Heaps (each with its own lock) per NUMA node; threads are spread over their node's heaps
    /// round-robin, so that threads on one node rarely wait for each other. 0 chooses the node's
    /// processors, at most 8. Default: 0.
    /// </summary>
    public int HeapsPerNode { get; init; }

    /// <summary>Segments one heap maps at most; a heap at its limit lets its requests fall to the other heaps, then fails them. Default: unlimited.</summary>
    public int MaximumSegmentsPerHeap { get; init; } = int.MaxValue;

    /// <summary>
    /// Whether each thread keeps a small cache of freed blocks for requests of up to 4 KiB (alignments
    /// up to 16) of its own heap, so that allocating and freeing them takes no lock and no locked
    /// instruction, as jemalloc's and mimalloc's thread caches do. A class is refilled with half its
    /// depth under one lock when it has no block for a request and gives half back under one lock when
    /// full; a thread holds at most 32 blocks or 4 KiB of blocks per class (at least 2), about 270 KiB
    /// if it used every class. Every 4096 allocations from its stacks a thread gives back the blocks of
    /// each class that it did not use since the last time; other blocks stay with it until it calls
    /// <see cref="NumaHeapAllocator.Trim"/>, migrates to another node, or exits (an exited thread's
    /// blocks go back when the statistics are read, when another thread starts using the allocator,
    /// or at <see cref="NumaHeapAllocator.Trim"/>); a segment holding one is not unmapped meanwhile. Double frees are refused as without the caches, except a second free
    /// that races the first on another thread of the same heap (both may read the block as live, as
    /// in other allocators with thread caches; under the heap's lock one of them was refused).
    /// Default: true.
    /// </summary>
    public bool ThreadCaches { get; init; } = true;

    /// <summary>The nodes to build heaps for and the query of the calling thread's node. Default: <see cref="NumaTopology.Current"/>.</summary>
    public NumaTopology? Topology { get; init; }

    /// <summary>
    /// How segments are mapped; the NUMA policy is replaced by each heap's own
    /// (<see cref="NumaPolicy.Bind(NumaNodeSet)"/> of its node on a multi-node machine, no policy on one node).
    /// Default: <see cref="MemoryMapSourceOptions.Default"/>.
    /// </summary>
    public MemoryMapSourceOptions? MemoryMap { get; init; }

    /// <summary>Throws when a value is out of range; the message names the setting.</summary>
    /// <exception cref="ArgumentException">An option is invalid.</exception>
    public void Validate()
    {
        const string Prefix = nameof(NumaHeapAllocatorOptions) + ".";
        if (SegmentSize is < MinimumSegmentSize or > MaximumSegmentSize || !BitOperations.IsPow2(SegmentSize))
        {
            throw new ArgumentException($"{Prefix}{nameof(SegmentSize)} is {SegmentSize}; it must be a power of two from {MinimumSegmentSize} to {MaximumSegmentSize}.", nameof(SegmentSize));
        }

        if (MaximumHeapBlockSize < 1024 || MaximumHeapBlockSize > SegmentSize / 4)
        {
            throw new ArgumentException($"{Prefix}{nameof(MaximumHeapBlockSize)} is {MaximumHeapBlockSize}; it must be from 1024 to a quarter of {nameof(SegmentSize)} ({SegmentSize / 4}).", nameof(MaximumHeapBlockSize));
        }

        if (HeapsPerNode is < 0 or > 64)
        {
            throw new ArgumentException($"{Prefix}{nameof(HeapsPerNode)} is {HeapsPerNode}; it must be from 1 to 64, or 0 for the node's processors (at most 8).", nameof(HeapsPerNode));
        }

        if (MaximumSegmentsPerHeap < 1)
        {
            throw new ArgumentException($"{Prefix}{nameof(MaximumSegmentsPerHeap)} is {MaximumSegmentsPerHeap}; it must be at least 1.", nameof(MaximumSegmentsPerHeap));
        }

        MemoryMap?.Validate();
    }
}
