namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Reads a slab page of a <see cref="ThreadLocalAllocator"/> from a test: which page a block lies
/// in, and whether a block is on one of its free lists. The free-list walk reads owner fields, so
/// it is made on the owning thread or while the owner is quiescent.
/// </summary>
internal static unsafe class SlabPageInspection
{
    /// <summary>The page of a slab block, or null for any other address.</summary>
    public static SlabPage? PageOf(byte* pointer) => SlabPageMap.Find((nuint)pointer);

    /// <summary>Whether <paramref name="block"/> is on <paramref name="page"/>'s local or remote free list (linear).</summary>
    public static bool FreeListsHold(SlabPage page, nuint block)
    {
        for (nuint p = page.Free; p != 0; p = *(nuint*)p)
        {
            if (p == block)
            {
                return true;
            }
        }

        for (nuint p = Volatile.Read(ref page.Remote.Value); p != 0; p = *(nuint*)p)
        {
            if (p == block)
            {
                return true;
            }
        }

        return false;
    }
}
