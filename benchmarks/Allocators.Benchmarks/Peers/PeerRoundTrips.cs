using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Benchmarks.Peers;

/// <summary>
/// One allocation of <c>size</c> bytes, a touch of its first and last byte, and its free, for each
/// peer of performance.md: the bodies every alloc+free benchmark class shares. A missing native
/// peer returns 0 (its row then measures nothing; <see cref="NativePeers"/> says so once).
/// </summary>
internal static unsafe class PeerRoundTrips
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Touch(Span<byte> block)
    {
        block[0] = 1;
        block[^1] = 2;
        return (byte)(block[0] + block[^1]);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Touch(byte* block, int size) => Touch(new Span<byte>(block, size));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte ArrayPoolShared(int size)
    {
        byte[] array = ArrayPool<byte>.Shared.Rent(size);
        byte result = Touch(array.AsSpan(0, size));
        ArrayPool<byte>.Shared.Return(array);
        return result;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Glibc(int size)
    {
        byte* p = (byte*)NativeMemory.Alloc((nuint)size);
        byte result = Touch(p, size);
        NativeMemory.Free(p);
        return result;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Mimalloc(NativePeers.Mimalloc? mi, int size)
    {
        if (mi is null)
        {
            return 0;
        }

        byte* p = (byte*)mi.Malloc((nuint)size);
        byte result = Touch(p, size);
        mi.Free(p);
        return result;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte MimallocNoTransition(NativePeers.Mimalloc? mi, int size)
    {
        if (mi is null)
        {
            return 0;
        }

        byte* p = (byte*)mi.MallocNoTransition((nuint)size);
        byte result = Touch(p, size);
        mi.FreeNoTransition(p);
        return result;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Jemalloc(NativePeers.Jemalloc? je, int size)
    {
        if (je is null)
        {
            return 0;
        }

        byte* p = (byte*)je.Malloc((nuint)size);
        byte result = Touch(p, size);
        je.Free(p);
        return result;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte JemallocNoTransition(NativePeers.Jemalloc? je, int size)
    {
        if (je is null)
        {
            return 0;
        }

        byte* p = (byte*)je.MallocNoTransition((nuint)size);
        byte result = Touch(p, size);
        je.FreeNoTransition(p);
        return result;
    }
}
