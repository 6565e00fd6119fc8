using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// The pages B-tree nodes live in: chunks of <see cref="BTreeNode.Size"/>-byte pages obtained from
/// a memory source, handed out and taken back through a free list threaded through the pages,
/// and released to the source all at once by <see cref="Release"/>.
/// </summary>
/// <remarks>
/// A tree operation that splits nodes must not fail half-way: the caller first
/// <see cref="TryReserve">reserves</see> the most pages the operation can take, which is the only
/// step that can fail (the source refused), and <see cref="Rent"/> then never obtains memory. Pages
/// are never given back to the source before <see cref="Release"/>: a freed node waits on the free
/// list for the next split. Not thread-safe: used under its owner's rules.
/// </remarks>
internal sealed unsafe class BTreeNodePool
{
    // At least 16 pages per chunk, fewer source calls; a coarser source (huge pages) gives more.
    private const nuint MinimumChunkSize = 16 * BTreeNode.Size;

    private readonly IMemorySource _source;
    private readonly nuint _chunkSize;

    // Every chunk obtained, for Release. A managed list: bookkeeping, not node memory.
    private readonly List<nuint> _chunks = [];

    // Free pages, linked through their first word; _freeCount of them.
    private nuint* _free;
    private int _freeCount;

    /// <summary>Creates a pool over <paramref name="source"/>; no memory is obtained until the first reservation.</summary>
    public BTreeNodePool(IMemorySource source)
    {
        _source = source;
        _chunkSize = Allocator.AlignUp(Math.Max(MinimumChunkSize, source.Granularity), source.Granularity);
    }

    /// <summary>Bytes obtained from the source for node pages.</summary>
    public nuint ObtainedBytes => (nuint)_chunks.Count * _chunkSize;

    /// <summary>Pages on the free list.</summary>
    public int FreeCount => _freeCount;

    /// <summary>Makes sure at least <paramref name="count"/> pages are free, obtaining chunks as needed.</summary>
    /// <returns><see langword="false"/> when the source refused a chunk (the pages obtained so far stay in the pool).</returns>
    public bool TryReserve(int count)
    {
        while (_freeCount < count)
        {
            if (!_source.TryObtain(_chunkSize, out byte* chunk))
            {
                return false;
            }

            _chunks.Add((nuint)chunk);
            for (nuint offset = 0; offset + BTreeNode.Size <= _chunkSize; offset += BTreeNode.Size)
            {
                Return((BTreeNode*)(chunk + offset));
            }
        }

        return true;
    }

    /// <summary>A free page, its header cleared; the caller reserved it.</summary>
    /// <exception cref="InvalidOperationException">No page was reserved (a bug of the caller).</exception>
    public BTreeNode* Rent()
    {
        if (_free == null)
        {
            throw new InvalidOperationException("A B-tree node was rented without a reservation.");
        }

        nuint* page = _free;
        _free = (nuint*)*page;
        _freeCount--;
        var node = (BTreeNode*)page;
        *node = default;
        return node;
    }

    /// <summary>Puts a page back on the free list.</summary>
    public void Return(BTreeNode* node)
    {
        var page = (nuint*)node;
        *page = (nuint)_free;
        _free = page;
        _freeCount++;
    }

    /// <summary>Gives every chunk back to the source; every page becomes invalid.</summary>
    public void Release()
    {
        foreach (nuint chunk in _chunks)
        {
            _source.Release((byte*)chunk, _chunkSize);
        }

        _chunks.Clear();
        _free = null;
        _freeCount = 0;
    }
}
