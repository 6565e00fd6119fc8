using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The boundary tags of a <see cref="NumaHeapAllocator"/> block: what is written where in a heap
/// segment, and the size classes of the free lists.
/// </summary>
/// <remarks>
/// <para>
/// A block starts on a 16-byte boundary with a 16-byte header: word 0 holds the block's size (a
/// multiple of 16, header included) and two flags, <see cref="InUse"/> and <see cref="PreviousInUse"/>;
/// word 1 holds, for a live block, its stamp: the usable size it was given in the upper 32 bits and a
/// keyed hash of its address in the lower 32, so that a free can tell a block start from user data
/// (an interior or foreign pointer) and check the size passed. The caller's bytes start right after
/// the header.
/// </para>
/// <para>
/// A free block (in a free list) has <see cref="InUse"/> clear, a zero stamp, its list links at
/// offsets 16 (next) and 24 (previous), and a footer, a copy of its size, in its last word: the
/// boundary tag the block after it reads (when that block's <see cref="PreviousInUse"/> is clear) to
/// find its start and merge with it. A live block has no footer: its neighbour knows from
/// <see cref="PreviousInUse"/> not to look. Hence the smallest block, <see cref="MinimumBlockSize"/>:
/// header, two links and a footer, rounded to 16.
/// </para>
/// <para>
/// A cached block (freed into its heap's per-class cache, not merged; blocks up to
/// <see cref="CachedBlockLimit"/>) keeps <see cref="InUse"/> set
/// so that its neighbours do not merge with it, has a zero stamp (so a second free of it is refused),
/// and links to the next cached block at offset 16.
/// </para>
/// <para>
/// Free-list classes: block sizes up to <see cref="ExactClassLimit"/> have a class each (16-byte
/// steps, so a list holds blocks of one size); above, four classes per power of two, so a list's blocks
/// differ in size by at most a quarter and a walk skips those too small.
/// </para>
/// </remarks>
internal static unsafe class NumaHeapBlock
{
    /// <summary>Header size, the block alignment and the size step.</summary>
    public const nuint HeaderSize = 16;

    /// <summary>Header, next and previous links and footer, rounded to 16.</summary>
    public const nuint MinimumBlockSize = 48;

    /// <summary>The smallest usable size: a block of <see cref="MinimumBlockSize"/> minus its header.</summary>
    public const nuint MinimumUsableSize = MinimumBlockSize - HeaderSize;

    /// <summary>The largest block size with an exact class (and a cache).</summary>
    public const nuint ExactClassLimit = 1024;

    /// <summary>The number of exact classes: 48, 64, … 1024.</summary>
    public const int ExactClassCount = (int)(ExactClassLimit / HeaderSize) - 2;

    /// <summary>The largest block size a heap caches unmerged on free (64 KiB and a header): the classes up to it have a cache.</summary>
    public const nuint CachedBlockLimit = (64 * 1024) + HeaderSize;

    /// <summary>The classes with a cache: every class holding blocks up to <see cref="CachedBlockLimit"/>.</summary>
    public const int CachedClassCount = ExactClassCount + (4 * 7);

    /// <summary>Free-list classes: the exact ones, then four per power of two from 1 KiB to 2^63.</summary>
    public const int ClassCount = ExactClassCount + (4 * 54);

    /// <summary>Word 0 flag: the block is allocated (or cached).</summary>
    public const nuint InUse = 1;

    /// <summary>Word 0 flag: the block before this one is allocated (or cached), so it has no footer to read.</summary>
    public const nuint PreviousInUse = 2;

    private const nuint FlagMask = 15;

    /// <summary>Word 0: size and flags.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref nuint Tag(nuint block) => ref *(nuint*)block;

    /// <summary>Word 1: the stamp of a live block, zero otherwise.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref ulong Stamp(nuint block) => ref *(ulong*)(block + 8);

    /// <summary>The block's size in bytes, header included.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static nuint SizeOf(nuint block) => Tag(block) & ~FlagMask;

    /// <summary>Whether the block is allocated or cached.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsInUse(nuint block) => (Tag(block) & InUse) != 0;

    /// <summary>Next free block in the list (offset 16), or 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref nuint Next(nuint block) => ref *(nuint*)(block + 16);

    /// <summary>Previous free block in the list (offset 24), or 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref nuint Previous(nuint block) => ref *(nuint*)(block + 24);

    /// <summary>The footer of a free block: its last word, a copy of its size.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ref nuint Footer(nuint block, nuint size) => ref *(nuint*)(block + size - 8);

    /// <summary>The stamp of a live block at <paramref name="block"/> with <paramref name="usable"/> bytes: never zero.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MakeStamp(nuint block, nuint usable, ulong key) =>
        ((ulong)usable << 32) | (uint)((((ulong)block ^ key) * 0x9E3779B97F4A7C15UL) >> 32) | 1;

    /// <summary>The usable size recorded in a stamp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static nuint UsableOf(ulong stamp) => (nuint)(stamp >> 32);

    /// <summary>The usable size of a heap request of <paramref name="size"/> bytes: at least 32, rounded up to 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static nuint UsableSizeOf(nuint size) =>
        size <= MinimumUsableSize ? MinimumUsableSize : (size + HeaderSize - 1) & ~(HeaderSize - 1);

    /// <summary>The free-list class of a block of <paramref name="size"/> bytes (at least <see cref="MinimumBlockSize"/>, a multiple of 16).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ClassOf(nuint size)
    {
        if (size <= ExactClassLimit)
        {
            return (int)(size / HeaderSize) - 3;
        }

        int log = 63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)size);
        int quarter = (int)(size >> (log - 2)) & 3;
        return ExactClassCount + ((log - 10) * 4) + quarter;
    }
}
