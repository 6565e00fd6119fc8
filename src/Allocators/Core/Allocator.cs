using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>Constants and argument rules shared by every allocator.</summary>
public static unsafe class Allocator
{
    /// <summary>The largest alignment any allocator accepts (1 GiB, the largest huge page).</summary>
    public const nuint MaximumAlignment = 1u << 30;

    /// <summary>
    /// The address returned for zero-byte requests. It is aligned to every alignment up to
    /// 2<sup>62</sup> (so to every supported alignment), lies outside any user-space mapping,
    /// and is never dereferenced or freed.
    /// </summary>
    /// <remarks>The seed used <c>usize::MAX</c>, which is odd and so misaligned for any alignment above one.</remarks>
    public static byte* ZeroSizeSentinel => (byte*)((nuint)1 << ((sizeof(nuint) * 8) - 2));

    /// <summary>The largest size a request may have, so that rounding it up can never overflow.</summary>
    public static nuint MaximumSize => (nuint)nint.MaxValue - MaximumAlignment;

    /// <summary>Whether <paramref name="alignment"/> is a power of two no larger than <see cref="MaximumAlignment"/>.</summary>
    public static bool IsValidAlignment(nuint alignment) =>
        BitOperations.IsPow2(alignment) && alignment <= MaximumAlignment;

    /// <summary>Rounds <paramref name="value"/> up to a multiple of the power of two <paramref name="alignment"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static nuint AlignUp(nuint value, nuint alignment) => (value + alignment - 1) & ~(alignment - 1);

    /// <summary>Rounds <paramref name="value"/> down to a multiple of the power of two <paramref name="alignment"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static nuint AlignDown(nuint value, nuint alignment) => value & ~(alignment - 1);

    /// <summary>Whether <paramref name="value"/> is a multiple of the power of two <paramref name="alignment"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsAligned(nuint value, nuint alignment) => (value & (alignment - 1)) == 0;

    /// <summary>Throws unless <paramref name="size"/> and <paramref name="alignment"/> are acceptable for a request.</summary>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a power of two or exceeds <see cref="MaximumAlignment"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> exceeds <see cref="MaximumSize"/>.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ValidateRequest(nuint size, nuint alignment)
    {
        if (!IsValidAlignment(alignment))
        {
            ThrowInvalidAlignment(alignment);
        }

        if (size > MaximumSize)
        {
            ThrowSizeTooLarge(size, nameof(size));
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowInvalidAlignment(nuint alignment) =>
        throw new ArgumentException(
            $"Alignment {alignment} is not supported: it must be a power of two between 1 and {MaximumAlignment}.",
            nameof(alignment));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowSizeTooLarge(nuint size, string parameterName) =>
        throw new ArgumentOutOfRangeException(
            parameterName,
            size,
            $"A size of {size} bytes cannot be rounded up to its alignment without overflow; the largest request is {MaximumSize} bytes.");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowNotOwned(string allocatorName, void* pointer) =>
        throw new ArgumentException(
            $"The pointer 0x{(nuint)pointer:X} was not allocated by this {allocatorName}.",
            nameof(pointer));

    /// <summary>For allocators that keep a table of live blocks: the pointer is in none of them.</summary>
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowNotLive(string allocatorName, void* pointer) =>
        throw new ArgumentException(
            $"The pointer 0x{(nuint)pointer:X} is not a live block of this {allocatorName}: it was not allocated here, or it was already freed (double free).",
            nameof(pointer));

    /// <summary>For allocators that keep each live block's size and alignment: the caller passed others.</summary>
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowBlockMismatch(void* pointer, nuint blockSize, nuint blockAlignment, nuint size, nuint alignment) =>
        throw new ArgumentException(
            $"The block at 0x{(nuint)pointer:X} has {blockSize} bytes aligned to {blockAlignment}, but {size} bytes aligned to {alignment} were passed; pass the size and alignment the block has.",
            nameof(pointer));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowDoubleFree(string allocatorName, void* pointer) =>
        throw new ArgumentException(
            $"The block at 0x{(nuint)pointer:X} is already free in this {allocatorName} (double free).",
            nameof(pointer));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static void ThrowNullPointer() =>
        throw new ArgumentNullException("pointer", "A null pointer was passed for a block of non-zero size.");
}
