using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>Settings of a <see cref="ThreadLocalAllocator"/>.</summary>
public sealed class ThreadLocalAllocatorOptions
{
    /// <summary>The smallest segment size: 2 MiB (a segment must hold a page of the largest class, 1 MiB).</summary>
    public const int MinimumSegmentSize = 2 << 20;

    /// <summary>The largest segment size: 64 MiB.</summary>
    public const int MaximumSegmentSize = 64 << 20;

    /// <summary>The default options.</summary>
    public static ThreadLocalAllocatorOptions Default { get; } = new();

    /// <summary>
    /// The size (and alignment) of the regions a thread's heap obtains from its memory source: a power
    /// of two between <see cref="MinimumSegmentSize"/> and <see cref="MaximumSegmentSize"/>. Default: 4 MiB.
    /// </summary>
    /// <remarks>Address space only: pages are touched (and count as resident) as blocks are handed out.</remarks>
    public int SegmentSize { get; init; } = 4 << 20;

    /// <summary>
    /// The largest request served from a thread's slabs, between 16 bytes and 256 KiB (rounded up to a
    /// size class); larger requests go to <see cref="Fallback"/>. Default: 256 KiB.
    /// </summary>
    public int MaximumSlabSize { get; init; } = 256 * 1024;

    /// <summary>
    /// The most segments one thread's heap may hold; beyond that (or when the operating system refuses
    /// a mapping) the heap is exhausted and requests go to <see cref="Fallback"/>. At least 1. Default:
    /// unlimited (<see cref="int.MaxValue"/>).
    /// </summary>
    public int MaximumSegmentsPerHeap { get; init; } = int.MaxValue;

    /// <summary>
    /// The NUMA policy of every heap's memory, or null (the default) to bind each heap to the node of the
    /// thread that creates it (<see cref="NumaPolicySelector"/>, else <see cref="NumaTopology.ForCurrentThread"/>).
    /// </summary>
    public NumaPolicy? NumaPolicy { get; init; }

    /// <summary>
    /// Chooses the NUMA policy of a new heap; called on the thread that creates the heap (its first
    /// allocation). Ignored when <see cref="NumaPolicy"/> is set. Default: null, meaning
    /// <see cref="NumaTopology.ForCurrentThread"/> of <see cref="NumaTopology.Current"/>.
    /// </summary>
    public Func<NumaPolicy>? NumaPolicySelector { get; init; }

    /// <summary>
    /// The template of every heap's <see cref="MemoryMapSource"/> (huge pages, locking, dump exclusion,
    /// warnings); its <see cref="MemoryMapSourceOptions.NumaPolicy"/> is replaced by the heap's policy.
    /// Default: <see cref="MemoryMapSourceOptions.Default"/>.
    /// </summary>
    public MemoryMapSourceOptions? MemoryMap { get; init; }

    /// <summary>
    /// Whether heaps map their segments with <see cref="MemoryMapSource"/> where it is supported (the
    /// default); when false, or where mapping is unsupported, segments come from a
    /// <see cref="NativeMemorySource"/> (portable, no NUMA placement).
    /// </summary>
    public bool UseMemoryMap { get; init; } = true;

    /// <summary>
    /// Where requests too large for the slabs (or larger alignments than 4 KiB) go, and where any request
    /// goes when a heap cannot obtain a segment. Default: null, meaning a new
    /// <see cref="MemoryMapAllocator"/> (a tracking <see cref="NativeMemoryAllocator"/> where mapping is
    /// unsupported) that the thread-local allocator owns and disposes. A fallback passed here is not disposed.
    /// </summary>
    /// <remarks>
    /// <para>
    /// Frees of its blocks through the thread-local allocator are passed on to it; it must be
    /// thread-safe and should reject pointers it does not own.
    /// </para>
    /// <para>
    /// A <see cref="SwitchableAllocator"/> over the thread-local allocator routes frees by address
    /// only, so it must be able to tell the fallback's blocks from the global allocator's. Leave this
    /// null (the default fallback registers its blocks in the router's owner registry: no cost), or
    /// pass the switchable allocator's global allocator itself, or an allocator whose
    /// <see cref="IAllocator.Owns"/> answers exactly (a <see cref="MemoryMapAllocator"/>, a
    /// <see cref="NativeMemoryAllocator"/> with <c>trackOwnership: true</c>, a
    /// <see cref="MemoryPoolAllocator"/>, a region allocator; asked before the global allocator about
    /// every unregistered pointer). The
    /// <see cref="SwitchableAllocator"/> constructor refuses any other fallback with
    /// <see cref="ArgumentException"/>. The default fallback always qualifies.
    /// </para>
    /// </remarks>
    public IAllocator? Fallback { get; init; }

    /// <summary>Throws when a setting is out of range; the message names it.</summary>
    /// <exception cref="ArgumentException">A setting is invalid.</exception>
    public void Validate()
    {
        if (SegmentSize is < MinimumSegmentSize or > MaximumSegmentSize || (SegmentSize & (SegmentSize - 1)) != 0)
        {
            throw new ArgumentException(
                $"{nameof(ThreadLocalAllocatorOptions)}.{nameof(SegmentSize)} is {SegmentSize}; it must be a power of two between {MinimumSegmentSize} and {MaximumSegmentSize}.",
                nameof(SegmentSize));
        }

        if (MaximumSlabSize is < 16 or > 256 * 1024)
        {
            throw new ArgumentException(
                $"{nameof(ThreadLocalAllocatorOptions)}.{nameof(MaximumSlabSize)} is {MaximumSlabSize}; it must be between 16 and {256 * 1024}.",
                nameof(MaximumSlabSize));
        }

        if (MaximumSegmentsPerHeap < 1)
        {
            throw new ArgumentException(
                $"{nameof(ThreadLocalAllocatorOptions)}.{nameof(MaximumSegmentsPerHeap)} is {MaximumSegmentsPerHeap}; it must be at least 1.",
                nameof(MaximumSegmentsPerHeap));
        }

        MemoryMap?.Validate();
    }
}
