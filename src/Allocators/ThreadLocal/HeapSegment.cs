namespace AllocHosting.Allocators;

/// <summary>
/// A segment of a <see cref="ThreadHeap"/>: one region aligned to its size, registered in
/// <see cref="OwnerRegistry"/> with the <see cref="ThreadLocalAllocator"/> as owner (so that
/// address-routed frees elsewhere find it), divided into 64 KiB units.
/// </summary>
internal sealed unsafe class HeapSegment(nuint start, nuint size)
{
    /// <summary>The first byte of the region.</summary>
    public readonly nuint Start = start;

    /// <summary>The region's size, a power of two.</summary>
    public readonly nuint Size = size;

    /// <summary>
    /// The page covering each unit, or null for a free unit. Written by the owner (under the heap's
    /// lock once abandoned) before any block of the page is handed out, so a thread freeing a live
    /// block always reads the page the block came from.
    /// </summary>
    public readonly SlabPage?[] Units = new SlabPage?[(int)(size >> SlabSizeClasses.UnitShift)];

    /// <summary>Pages in the segment. Owner only.</summary>
    public int PageCount;

    /// <summary>Finds <paramref name="count"/> consecutive free units (first fit). Owner only.</summary>
    public bool TryTakeUnits(int count, out int first)
    {
        int run = 0;
        for (int i = 0; i < Units.Length; i++)
        {
            run = Units[i] is null ? run + 1 : 0;
            if (run == count)
            {
                first = i - count + 1;
                return true;
            }
        }

        first = -1;
        return false;
    }
}
