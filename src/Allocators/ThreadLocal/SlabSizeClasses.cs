using System.Numerics;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The size classes of <see cref="ThreadLocalAllocator"/>'s slabs: 16-byte steps up to 128 bytes,
/// then four classes per power of two (1¼, 1½, 1¾ and 2 times it) up to 256 KiB; 52 classes.
/// </summary>
/// <remarks>
/// Four steps per doubling bound the internal waste of a request at 25 % (12.5 % on average) while
/// keeping the class lookup two shifts and a leading-zero count. Every class is a multiple of
/// 16, so every block is 16-byte aligned; a class whose size is a multiple of a larger power of
/// two gives that alignment too (blocks start at a 64 KiB-aligned page plus a multiple of the size).
/// </remarks>
internal static class SlabSizeClasses
{
    /// <summary>The number of classes.</summary>
    public const int Count = 52;

    /// <summary>The largest class: 256 KiB.</summary>
    public const int LargestSize = 256 * 1024;

    /// <summary>The smallest class and the alignment of every block: room for a free-list link and a double-free stamp.</summary>
    public const int SmallestSize = 16;

    /// <summary>The unit pages are made of and the alignment of every page: 64 KiB.</summary>
    public const int UnitShift = 16;

    /// <summary>The size of a page unit.</summary>
    public const int UnitSize = 1 << UnitShift;

    private static readonly int[] s_sizes = CreateSizes();

    /// <summary>The class of a request of <paramref name="size"/> bytes (1 ≤ size ≤ <see cref="LargestSize"/>) with alignment ≤ 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int IndexOf(nuint size)
    {
        if (size <= 128)
        {
            return (int)((size - 1) >> 4);
        }

        nuint n = size - 1;
        int log = BitOperations.Log2(n);
        return 8 + ((log - 7) << 2) + (int)((n >> (log - 2)) & 3);
    }

    /// <summary>
    /// The smallest class that holds <paramref name="size"/> bytes at a multiple of
    /// <paramref name="alignment"/> (≤ 64 KiB), or <see cref="Count"/> when no class does.
    /// </summary>
    public static int IndexOf(nuint size, nuint alignment)
    {
        nuint wanted = Math.Max(size, alignment);
        if (wanted > LargestSize)
        {
            return Count;
        }

        int index = IndexOf(wanted);
        while (index < Count && ((nuint)s_sizes[index] & (alignment - 1)) != 0)
        {
            index++;
        }

        return index;
    }

    /// <summary>The block size of class <paramref name="index"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int SizeOf(int index) => s_sizes[index];

    /// <summary>
    /// The 64 KiB units a page of class <paramref name="index"/> spans: one for classes up to
    /// 16 KiB, otherwise enough for four blocks (so a 256 KiB class takes 1 MiB of address space,
    /// which is touched only as blocks are handed out).
    /// </summary>
    public static int UnitsOf(int index)
    {
        long bytes = Math.Max(UnitSize, 4L * s_sizes[index]);
        return (int)((bytes + UnitSize - 1) >> UnitShift);
    }

    private static int[] CreateSizes()
    {
        var sizes = new int[Count];
        for (int i = 0; i < Count; i++)
        {
            if (i < 8)
            {
                sizes[i] = (i + 1) * 16;
            }
            else
            {
                int log = 7 + ((i - 8) >> 2);
                int step = (i - 8) & 3;
                sizes[i] = (1 << log) + ((step + 1) << (log - 2));
            }
        }

        return sizes;
    }
}
