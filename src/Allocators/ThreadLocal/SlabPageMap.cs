using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// Finds the <see cref="SlabPage"/> of any address in two dependent loads: the free fast path of
/// <see cref="ThreadLocalAllocator"/>. Like <see cref="OwnerRegistry"/> it never dereferences the
/// address, so a foreign pointer yields null instead of a fault.
/// </summary>
/// <remarks>
/// A two-level radix table over 48-bit addresses with 64 KiB units (the page unit): the root is
/// indexed by address bits 32–47, each leaf (65 536 page references, created on first use and never
/// freed) by bits 16–31, so one leaf covers 4 GiB of address space. <see cref="OwnerRegistry"/>
/// answers "which allocator", with 4 KiB granules and three loads; this map answers "which page"
/// directly, which saves the segment and unit loads that would follow.
/// A page is entered before any of its blocks is handed out and removed only when none is live, so
/// a thread freeing a live block (received from the allocating thread through some synchronisation)
/// always reads its page.
/// </remarks>
internal static class SlabPageMap
{
    private const int LevelBits = 16;
    private const int LevelSize = 1 << LevelBits;
    private const int AddressBits = SlabSizeClasses.UnitShift + (2 * LevelBits);

    private static readonly SlabPage?[]?[] s_root = new SlabPage?[]?[LevelSize];
    private static readonly Lock s_lock = new();

    /// <summary>The page covering <paramref name="address"/>, or null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static SlabPage? Find(nuint address)
    {
        ulong unit = (ulong)address >> SlabSizeClasses.UnitShift;
        if ((ulong)address >> AddressBits != 0)
        {
            return null;
        }

        // The shifts and masks keep both indexes inside the arrays, so no bounds check is needed.
        SlabPage?[]? leaf = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(s_root), (nint)(unit >> LevelBits));
        return leaf is null ? null : Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(leaf), (nint)(unit & (LevelSize - 1)));
    }

    /// <summary>Enters <paramref name="page"/> (or null, to remove it) for each of its units.</summary>
    public static void Set(SlabPage page, SlabPage? value)
    {
        ulong first = (ulong)page.Start >> SlabSizeClasses.UnitShift;
        for (ulong unit = first; unit < first + (ulong)page.UnitCount; unit++)
        {
            Volatile.Write(ref Leaf(unit)[(int)(unit & (LevelSize - 1))], value);
        }
    }

    private static SlabPage?[] Leaf(ulong unit)
    {
        int index = (int)(unit >> LevelBits);
        SlabPage?[]? leaf = Volatile.Read(ref s_root[index]);
        if (leaf is not null)
        {
            return leaf;
        }

        lock (s_lock)
        {
            leaf = s_root[index];
            if (leaf is null)
            {
                leaf = new SlabPage?[LevelSize];
                Volatile.Write(ref s_root[index], leaf);
            }

            return leaf;
        }
    }
}
