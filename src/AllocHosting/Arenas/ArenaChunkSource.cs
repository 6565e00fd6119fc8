using System.Diagnostics.Metrics;
using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
using Microsoft.Extensions.Logging;

namespace AllocHosting;

/// <summary>
/// Where the request arenas' chunks come from and go back to: the memory source (memory mapping
/// with the NUMA placement of the options where supported), the segments carved from it, the
/// pool chunks that exist, and the large chunks (each its own region of the same source).
/// </summary>
/// <remarks>
/// <para>
/// Layout: memory comes from one <see cref="IMemorySource"/> in segments, each an
/// <see cref="ArenaMemorySource"/> of up to <see cref="SlotsPerSegment"/> chunk-sized slots,
/// created as the pool grows. A chunk (<see cref="ArenaChunk"/>) holds one slot for its whole
/// life; a segment whose slots are all free can go back to the operating system. A large chunk
/// (see <see cref="LargeChunkClasses"/>) is a region of its own, obtained from the same source
/// and given back when the chunk is retired.
/// </para>
/// <para>
/// Threads: the members that create, retire or walk pool chunks and segments
/// (<see cref="CreateChunk"/>, <see cref="Retire"/>, <see cref="CreateLargeChunk"/>,
/// <see cref="RetireLargeChunk"/>, <see cref="ReleaseEmptySegments"/>,
/// <see cref="CloseSegments"/>, <see cref="LiveBytes"/>, <see cref="RentCount"/>) are not
/// thread-safe: they run under the lock of the <see cref="ArenaChunkBudget"/> that owns this
/// source, its only caller. Every other member may be called from any thread.
/// </para>
/// </remarks>
internal sealed class ArenaChunkSource
{
    /// <summary>Chunk slots of a full segment.</summary>
    internal const int SlotsPerSegment = 16;

    private readonly SwitchableAllocatorOptions _options;

    // Under the budget's lock.
    private readonly List<ArenaMemorySource> _segments = [];
    private readonly HashSet<ArenaChunk> _chunks = [];   // a set: trimming removes many, each in O(1)
    private readonly HashSet<ArenaChunk> _largeChunks = [];

    // Written under the budget's lock (with _chunks), read by any thread.
    private int _chunkCount;

    // Any thread, with Interlocked.
    private long _retiredRentCount;   // rents served by chunks since disposed (trimmed chunks, large chunks)
    private long _unsupportedMappedBytes;

    /// <summary>A source of chunks of the options' kind and size, carved from <paramref name="memory"/> (see <see cref="CreateMemorySource"/>).</summary>
    public ArenaChunkSource(SwitchableAllocatorOptions options, IMemorySource memory)
    {
        _options = options;
        Memory = memory;
        Kind = options.ArenaKind;
        ChunkSize = options.InitialArenaSize;

        // The usable bytes of a chunk (a bit set chunk keeps its bit set inside).
        using ArenaChunk probe = CarveChunk(NativeMemorySource.Shared);
        ChunkCapacity = probe.Capacity;
    }

    public RequestArenaKind Kind { get; }

    public int ChunkSize { get; }

    /// <summary>Usable bytes of one chunk.</summary>
    public int ChunkCapacity { get; }

    /// <summary>Where the segments come from (a <see cref="MemoryMapSource"/> where supported).</summary>
    public IMemorySource Memory { get; }

    /// <summary>Pool chunks that exist now, idle or in use (a snapshot when read outside the budget's lock).</summary>
    public int ChunkCount => Volatile.Read(ref _chunkCount);

    /// <summary>Under the budget's lock: large chunks that exist now, idle or in use.</summary>
    public int LargeChunkCount => _largeChunks.Count;

    /// <summary>Under the budget's lock: bytes of the large chunks that exist now.</summary>
    public long LargeBytes { get; private set; }

    /// <summary>Under the budget's lock: bytes held in all pool and large chunks now.</summary>
    public long LiveBytes
    {
        get
        {
            long live = 0;
            foreach (ArenaChunk chunk in _chunks)
            {
                live += chunk.Used;
            }

            foreach (ArenaChunk chunk in _largeChunks)
            {
                live += chunk.Used;
            }

            return live;
        }
    }

    /// <summary>Under the budget's lock: rents served by pool and large chunks since start.</summary>
    public long RentCount
    {
        get
        {
            long rents = Interlocked.Read(ref _retiredRentCount);
            foreach (ArenaChunk chunk in _chunks)
            {
                rents += chunk.Statistics.AllocationCount;
            }

            foreach (ArenaChunk chunk in _largeChunks)
            {
                rents += chunk.Statistics.AllocationCount;
            }

            return rents;
        }
    }

    /// <summary>A source of chunks of <paramref name="options"/> from memory placed for this machine's NUMA topology (what the hosting registers); degradations of the memory source are logged to <paramref name="logger"/>.</summary>
    public static ArenaChunkSource ForThisMachine(SwitchableAllocatorOptions options, ILogger logger) =>
        new(options, CreateMemorySource(options.NumaPlacement, NumaTopology.Current, logger));

    /// <summary>The memory source of the options' NUMA placement on <paramref name="topology"/>; its degradations are logged to <paramref name="logger"/>.</summary>
    public static IMemorySource CreateMemorySource(ArenaNumaPlacement placement, NumaTopology topology, ILogger logger) =>
        MemorySource.CreateDefault(new MemoryMapSourceOptions
        {
            NumaPolicy = PolicyFor(placement, topology),
            Warning = message => logger.MemorySourceDegraded(message),
        });

    /// <summary>The NUMA policy of the pool's memory source for <paramref name="placement"/> on <paramref name="topology"/>.</summary>
    internal static NumaPolicy PolicyFor(ArenaNumaPlacement placement, NumaTopology topology)
    {
        // A single-node machine gains nothing from a policy but would pay an mbind per mapping.
        if (!topology.IsMultiNode)
        {
            return NumaPolicy.Default;
        }

        return placement switch
        {
            ArenaNumaPlacement.LocalToRequestThread => NumaPolicy.Local,
            ArenaNumaPlacement.Interleave => NumaPolicy.Interleave(NumaNodeSet.Of(topology.Nodes.Select(node => node.Id))),
            _ => NumaPolicy.Default,
        };
    }

    /// <summary>Under the budget's lock: a new chunk on a free slot of some segment, or of a new segment sized so that at most <paramref name="maxChunks"/> chunks ever exist.</summary>
    public ArenaChunk CreateChunk(int maxChunks)
    {
        foreach (ArenaMemorySource segment in _segments)
        {
            if (segment.FreeSlotCount > 0)
            {
                return Register(CarveChunk(segment));
            }
        }

        int slots = Math.Min(SlotsPerSegment, maxChunks - (_segments.Count * SlotsPerSegment));
        slots = Math.Max(1, Math.Min(slots, maxChunks - _chunks.Count));
        var created = new ArenaMemorySource(Memory, (nuint)ChunkSize, slots);
        _segments.Add(created);
        if (!MemoryMapSource.IsSupported)
        {
            Interlocked.Add(ref _unsupportedMappedBytes, (long)created.Range.Length);
        }

        return Register(CarveChunk(created));
    }

    /// <summary>Under the budget's lock: disposes a pool chunk, keeping its rent count.</summary>
    public void Retire(ArenaChunk chunk)
    {
        _chunks.Remove(chunk);
        Volatile.Write(ref _chunkCount, _chunks.Count);
        Interlocked.Add(ref _retiredRentCount, chunk.Statistics.AllocationCount);
        chunk.Dispose();
    }

    /// <summary>Under the budget's lock: gives the segments whose slots are all free back to the operating system; returns how many.</summary>
    public int ReleaseEmptySegments()
    {
        int released = 0;
        for (int i = _segments.Count - 1; i >= 0; i--)
        {
            ArenaMemorySource segment = _segments[i];
            if (segment.FreeSlotCount == segment.SlotCount)
            {
                ReleaseSegment(segment);
                _segments.RemoveAt(i);
                released++;
            }
        }

        return released;
    }

    /// <summary>Under the budget's lock, once: disposes every segment, each giving its region back once the last chunk still held by a request comes home.</summary>
    public void CloseSegments()
    {
        foreach (ArenaMemorySource segment in _segments)
        {
            segment.Dispose();
        }

        _segments.Clear();
    }

    /// <summary>Under the budget's lock: a new large bump chunk of <paramref name="size"/> bytes, a region of its own from <see cref="Memory"/>.</summary>
    /// <exception cref="OutOfMemoryException">The memory source has no room.</exception>
    public ArenaChunk CreateLargeChunk(long size)
    {
        bool zero = Memory is not MemoryMapSource && _options.ClearPolicy == ArenaClearPolicy.ClearUsed;
        ArenaChunk chunk = ArenaChunk.CreateBump(Memory, (nuint)size, zero);
        _largeChunks.Add(chunk);
        LargeBytes += chunk.Capacity;
        if (!MemoryMapSource.IsSupported)
        {
            Interlocked.Add(ref _unsupportedMappedBytes, chunk.Capacity);
        }

        return chunk;
    }

    /// <summary>Under the budget's lock: disposes a large chunk (its region goes back to the source), keeping its rent count.</summary>
    public void RetireLargeChunk(ArenaChunk chunk)
    {
        if (!_largeChunks.Remove(chunk))
        {
            throw new InvalidOperationException("The chunk is not a large chunk of this source.");
        }

        LargeBytes -= chunk.Capacity;
        if (!MemoryMapSource.IsSupported)
        {
            Interlocked.Add(ref _unsupportedMappedBytes, -chunk.Capacity);
        }

        Interlocked.Add(ref _retiredRentCount, chunk.Statistics.AllocationCount);
        chunk.Dispose();
    }

    /// <summary>The measurements of <c>allochosting.mapped</c>: the process's mapped bytes per NUMA node, or where that is not known, the bytes of the segments and large chunks.</summary>
    public IEnumerable<Measurement<long>> ObserveMapped()
    {
        if (!MemoryMapSource.IsSupported)
        {
            return [new(Interlocked.Read(ref _unsupportedMappedBytes), new KeyValuePair<string, object?>(AllocHostingMetrics.NumaNodeTag, -1))];
        }

        var measurements = new List<Measurement<long>>();
        foreach (var (node, bytes) in MemoryMapSource.GetProcessMappedBytesByNode())
        {
            measurements.Add(new(bytes, new KeyValuePair<string, object?>(AllocHostingMetrics.NumaNodeTag, node)));
        }

        return measurements;
    }

    private ArenaChunk Register(ArenaChunk chunk)
    {
        _chunks.Add(chunk);
        Volatile.Write(ref _chunkCount, _chunks.Count);
        return chunk;
    }

    // Memory maps come zeroed; any other source's memory (the portable source, or one a test or an app
    // passes) must be zeroed once when clearing is on.
    private ArenaChunk CarveChunk(IMemorySource source)
    {
        bool zero = Memory is not MemoryMapSource && _options.ClearPolicy == ArenaClearPolicy.ClearUsed;
        return Kind == RequestArenaKind.Bump
            ? ArenaChunk.CreateBump(source, (nuint)ChunkSize, zero)
            : ArenaChunk.CreateBitSet(source, (nuint)ChunkSize, (nuint)_options.BitSetBlockSize, zero);
    }

    private void ReleaseSegment(ArenaMemorySource segment)
    {
        if (!MemoryMapSource.IsSupported)
        {
            Interlocked.Add(ref _unsupportedMappedBytes, -(long)segment.Range.Length);
        }

        segment.Dispose();
    }
}
