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

    /// <summary>mimalloc or jemalloc through their plain exports (with the GC transition); 0 when the peer is missing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte Native(NativePeers.MallocFree? peer, int size)
    {
        if (peer is null)
        {
            return 0;
        }

        byte* p = (byte*)peer.Malloc((nuint)size);
        byte result = Touch(p, size);
        peer.Free(p);
        return result;
    }

    /// <summary>The same through the exports marked <c>SuppressGCTransition</c> (the allocator's own cost).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte NativeNoTransition(NativePeers.MallocFree? peer, int size)
    {
        if (peer is null)
        {
            return 0;
        }

        byte* p = (byte*)peer.MallocNoTransition((nuint)size);
        byte result = Touch(p, size);
        peer.FreeNoTransition(p);
        return result;
    }
}
