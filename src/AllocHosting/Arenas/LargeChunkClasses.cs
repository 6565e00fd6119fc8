using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// The size classes of large chunks and their idle stacks: bump chunks bigger than one pool
/// chunk, for rents a pool chunk cannot hold and for memory beyond a request's maximum.
/// </summary>
/// <remarks>
/// <para>
/// Classes: the chunk size times 2, 4, 8, … up to the first class that holds the per-request
/// maximum (with the defaults, 64 KiB chunks and 1 MiB per request: 128 KiB, 256 KiB, 512 KiB and
/// 1 MiB). A rent takes the smallest class that holds it, so a class chunk wastes less than half
/// its bytes; the pages a rent never touches are mapped but not resident. A rent larger than the
/// largest class gets an oversize chunk of exactly its page-rounded size, which is not pooled: it
/// is unmapped when its request ends. Class chunks go back to the idle stack of their class (the
/// most recent on top, so its pages are warm) and are trimmed when idle like pool chunks.
/// </para>
/// <para>
/// Threads: not thread-safe; it runs under the lock of the <see cref="ArenaChunkBudget"/> that owns it.
/// </para>
/// </remarks>
internal sealed class LargeChunkClasses
{
    /// <summary>The largest class: 1 GiB (a chunk is at most <see cref="int.MaxValue"/> bytes).</summary>
    internal const long MaxClassSize = 1L << 30;

    /// <summary>What an oversize chunk is rounded up to: a page.</summary>
    internal const long OversizeUnit = 4096;

    /// <summary>The largest rent a chunk can hold: its page-rounded size stays within <see cref="int.MaxValue"/>.</summary>
    internal const long MaxRentBytes = int.MaxValue - OversizeUnit + 1;

    private readonly List<ArenaChunk>[] _idle;
    private readonly int[] _idleLowWater;

    /// <summary>Classes from twice <paramref name="chunkSize"/> up to the first that holds <paramref name="maxPerRequest"/> bytes (at least one class, at most <see cref="MaxClassSize"/>).</summary>
    public LargeChunkClasses(int chunkSize, long maxPerRequest)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunkSize);
        ChunkSize = chunkSize;
        var sizes = new List<long>();
        for (long size = 2L * chunkSize; size <= MaxClassSize; size *= 2)
        {
            sizes.Add(size);
            if (size >= maxPerRequest)
            {
                break;
            }
        }

        ClassSizes = [.. sizes];
        _idle = new List<ArenaChunk>[ClassSizes.Count];
        for (int i = 0; i < _idle.Length; i++)
        {
            _idle[i] = [];
        }

        _idleLowWater = new int[ClassSizes.Count];
    }

    /// <summary>Bytes of one pool chunk.</summary>
    public int ChunkSize { get; }

    /// <summary>The bytes of each class, smallest first.</summary>
    public IReadOnlyList<long> ClassSizes { get; }

    /// <summary>The largest class: rents beyond it get oversize chunks.</summary>
    public long LargestClassSize => ClassSizes[^1];

    /// <summary>Idle class chunks.</summary>
    public int IdleCount { get; private set; }

    /// <summary>Bytes of the idle class chunks.</summary>
    public long IdleBytes { get; private set; }

    /// <summary>
    /// The bytes of the chunk that serves a rent of <paramref name="bytes"/>: the smallest class
    /// that holds it, or (beyond the largest class) the size of an oversize chunk.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">No chunk can hold <paramref name="bytes"/>.</exception>
    public long ChunkSizeFor(long bytes)
    {
        if (bytes <= 0 || bytes > MaxRentBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"A rent of {bytes} bytes cannot be served by a large chunk: it takes from 1 to {MaxRentBytes} bytes.");
        }

        int index = ClassOf(bytes);
        return index >= 0 ? ClassSizes[index] : (bytes + OversizeUnit - 1) / OversizeUnit * OversizeUnit;
    }

    /// <summary>Whether a chunk of <paramref name="size"/> bytes is a class chunk (pooled), not an oversize one.</summary>
    public bool IsClassSize(long size) => ClassOfSize(size) >= 0;

    /// <summary>The most recently returned idle chunk of <paramref name="size"/>'s class, or null.</summary>
    public ArenaChunk? TakeIdle(long size)
    {
        int index = ClassOfSize(size);
        if (index < 0)
        {
            return null;
        }

        List<ArenaChunk> idle = _idle[index];
        if (idle.Count == 0)
        {
            return null;
        }

        ArenaChunk chunk = idle[^1];
        idle.RemoveAt(idle.Count - 1);
        _idleLowWater[index] = Math.Min(_idleLowWater[index], idle.Count);
        IdleCount--;
        IdleBytes -= chunk.Capacity;
        return chunk;
    }

    /// <summary>Puts a released class chunk on its idle stack; false for an oversize chunk (the caller disposes it).</summary>
    public bool TryReturnIdle(ArenaChunk chunk)
    {
        int index = ClassOfSize(chunk.Capacity);
        if (index < 0)
        {
            return false;
        }

        _idle[index].Add(chunk);
        IdleCount++;
        IdleBytes += chunk.Capacity;
        return true;
    }

    /// <summary>Takes the coldest idle chunk of the largest class that has one (to make room in the budget), or null.</summary>
    public ArenaChunk? TakeColdest()
    {
        for (int index = _idle.Length - 1; index >= 0; index--)
        {
            List<ArenaChunk> idle = _idle[index];
            if (idle.Count > 0)
            {
                ArenaChunk chunk = idle[0];
                idle.RemoveAt(0);
                _idleLowWater[index] = Math.Min(_idleLowWater[index], idle.Count);
                IdleCount--;
                IdleBytes -= chunk.Capacity;
                return chunk;
            }
        }

        return null;
    }

    /// <summary>
    /// Takes, from each class, the chunks that stayed idle since the previous call (the low-water
    /// mark of its stack, coldest first) and starts the next interval; the caller disposes them.
    /// </summary>
    public List<ArenaChunk> TakeIdleThroughInterval()
    {
        var trimmed = new List<ArenaChunk>();
        for (int index = 0; index < _idle.Length; index++)
        {
            List<ArenaChunk> idle = _idle[index];
            int surplus = Math.Min(_idleLowWater[index], idle.Count);
            for (int i = 0; i < surplus; i++)
            {
                trimmed.Add(idle[i]);
                IdleBytes -= idle[i].Capacity;
            }

            idle.RemoveRange(0, surplus);
            IdleCount -= surplus;
            _idleLowWater[index] = idle.Count;
        }

        return trimmed;
    }

    /// <summary>Takes every idle chunk (at shutdown); the caller disposes them.</summary>
    public List<ArenaChunk> TakeAllIdle()
    {
        var all = new List<ArenaChunk>(IdleCount);
        foreach (List<ArenaChunk> idle in _idle)
        {
            all.AddRange(idle);
            idle.Clear();
        }

        Array.Clear(_idleLowWater);
        IdleCount = 0;
        IdleBytes = 0;
        return all;
    }

    // The smallest class that holds bytes, or -1 beyond the largest.
    private int ClassOf(long bytes)
    {
        if (bytes > LargestClassSize)
        {
            return -1;
        }

        // A handful of classes (at most 30): a scan is as fast as arithmetic and holds for chunk sizes that are not powers of two.
        int index = 0;
        while (ClassSizes[index] < bytes)
        {
            index++;
        }

        return index;
    }

    // The class of exactly size bytes, or -1.
    private int ClassOfSize(long size)
    {
        int index = ClassOf(size);
        return index >= 0 && ClassSizes[index] == size ? index : -1;
    }
}
