using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// Finds, in O(1), which allocator owns an address: the routing table behind
/// <c>SwitchableAllocator</c>'s frees, which go to the allocator that owns the address whichever
/// flow or thread frees it and whatever allocator that flow uses now (seed weakness W-SW2).
/// </summary>
/// <remarks>
/// <para>
/// Layout: a three-level radix table over 48-bit user-space addresses with 4 KiB granules.
/// Level one is indexed by address bits 36–47, level two by bits 24–35, and each leaf (an
/// array of 4 096 owner references) by bits 12–23, so a leaf covers 16 MiB. A lookup is three
/// dependent loads and never locks; registration takes a lock and publishes new levels with
/// volatile writes, so a concurrent lookup sees either the old or the new owner of a granule.
/// </para>
/// <para>
/// A registered range covers every granule it touches, so two owners must not share a
/// granule: ranges are normally page-aligned regions from a memory source, which guarantees
/// that. Registering a granule that another owner already holds throws and changes nothing.
/// Addresses above 2<sup>48</sup> are never registered and are owned by nobody.
/// </para>
/// <para>
/// Owners are the allocators that hand the memory out (context allocators, the thread-local
/// allocator for its segments, memory map allocators for their mappings), so a router calls the
/// owner it finds directly.
/// </para>
/// </remarks>
internal static class OwnerRegistry
{
    public const int GranuleShift = 12;
    private const int LevelBits = 12;
    private const int LevelSize = 1 << LevelBits;
    private const int LevelMask = LevelSize - 1;
    private const int AddressBits = GranuleShift + (3 * LevelBits);

    private static readonly IAllocator?[]?[]?[] s_root = new IAllocator?[]?[]?[LevelSize];
    private static readonly Lock s_lock = new();

    /// <summary>The owner of <paramref name="address"/>, or <see langword="null"/> when no registered range covers it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static IAllocator? Find(nuint address)
    {
        if ((ulong)address >> AddressBits != 0)
        {
            return null;
        }

        ulong granule = (ulong)address >> GranuleShift;
        IAllocator?[]?[]? middle = Volatile.Read(ref s_root[(int)(granule >> (2 * LevelBits))]);
        if (middle is null)
        {
            return null;
        }

        IAllocator?[]? leaf = Volatile.Read(ref middle[(int)((granule >> LevelBits) & LevelMask)]);
        return leaf is null ? null : Volatile.Read(ref leaf[(int)(granule & LevelMask)]);
    }

    /// <summary>Records <paramref name="owner"/> as the owner of every granule of <c>[start, start + length)</c>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The range is empty or lies beyond 48-bit addresses.</exception>
    /// <exception cref="InvalidOperationException">Part of the range already belongs to another owner; nothing was registered.</exception>
    public static void Register(nuint start, nuint length, IAllocator owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        (ulong first, ulong last) = Granules(start, length);
        lock (s_lock)
        {
            for (ulong g = first; g <= last; g++)
            {
                IAllocator? current = Peek(g);
                if (current is not null && !ReferenceEquals(current, owner))
                {
                    throw new InvalidOperationException(
                        $"The range 0x{start:X}+{length} overlaps memory already registered to {current.GetType().Name} at 0x{g << GranuleShift:X}.");
                }
            }

            for (ulong g = first; g <= last; g++)
            {
                Volatile.Write(ref Leaf(g)[(int)(g & LevelMask)], owner);
            }
        }
    }

    /// <summary>Forgets the owner of every granule of <c>[start, start + length)</c> that <paramref name="owner"/> holds.</summary>
    public static void Unregister(nuint start, nuint length, IAllocator owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        (ulong first, ulong last) = Granules(start, length);
        lock (s_lock)
        {
            for (ulong g = first; g <= last; g++)
            {
                if (ReferenceEquals(Peek(g), owner))
                {
                    Volatile.Write(ref Leaf(g)[(int)(g & LevelMask)], null);
                }
            }
        }
    }

    private static (ulong First, ulong Last) Granules(nuint start, nuint length)
    {
        ulong end = (ulong)start + (ulong)length;
        if (length == 0 || end < (ulong)start || end > 1UL << AddressBits)
        {
            throw new ArgumentOutOfRangeException(
                nameof(length), length, $"The range 0x{start:X}+{length} is empty or does not fit in 48-bit addresses.");
        }

        return ((ulong)start >> GranuleShift, (end - 1) >> GranuleShift);
    }

    private static IAllocator? Peek(ulong granule)
    {
        IAllocator?[]?[]? middle = s_root[(int)(granule >> (2 * LevelBits))];
        IAllocator?[]? leaf = middle?[(int)((granule >> LevelBits) & LevelMask)];
        return leaf?[(int)(granule & LevelMask)];
    }

    // Called under s_lock: creates missing levels and publishes them before use.
    private static IAllocator?[] Leaf(ulong granule)
    {
        ref IAllocator?[]?[]? middle = ref s_root[(int)(granule >> (2 * LevelBits))];
        if (middle is null)
        {
            Volatile.Write(ref middle, new IAllocator?[]?[LevelSize]);
        }

        ref IAllocator?[]? leaf = ref middle![(int)((granule >> LevelBits) & LevelMask)];
        if (leaf is null)
        {
            Volatile.Write(ref leaf, new IAllocator?[LevelSize]);
        }

        return leaf!;
    }
}
