using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// One <see cref="MemoryManager{T}"/> over the whole usable part of an <see cref="ArenaChunk"/>
/// for one use of the chunk: every <see cref="Memory{T}"/> the chunk rents during that use is a
/// slice of it, so renting allocates nothing. Retired when the chunk is released, after which
/// <c>Span</c> on any of those slices throws <see cref="ObjectDisposedException"/>.
/// </summary>
/// <typeparam name="T">The element type.</typeparam>
internal sealed unsafe class ArenaChunkMemoryManager<T> : MemoryManager<T>
    where T : unmanaged
{
    private const int Live = 0;
    private const int Retired = 1;

    // [_start, _start + _length elements) lies inside the chunk's usable memory while _state is Live.
    private readonly T* _start;
    private readonly int _length;
    private int _state;

    internal ArenaChunkMemoryManager(T* start, int length)
    {
        _start = start;
        _length = length;
    }

    /// <summary>The whole chunk as a span.</summary>
    /// <exception cref="ObjectDisposedException">The chunk was released since this manager was created.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public override Span<T> GetSpan()
    {
        if (Volatile.Read(ref _state) != Live)
        {
            ThrowRetired();
        }

        return new Span<T>(_start, _length);
    }

    /// <summary>Returns a handle to element <paramref name="elementIndex"/>; native memory never moves.</summary>
    /// <exception cref="ObjectDisposedException">The chunk was released since this manager was created.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="elementIndex"/> lies outside the chunk.</exception>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        if (Volatile.Read(ref _state) != Live)
        {
            ThrowRetired();
        }

        ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)elementIndex, (uint)_length, nameof(elementIndex));
        return new MemoryHandle(_start + elementIndex);
    }

    /// <summary>Does nothing: native memory never moves.</summary>
    public override void Unpin()
    {
    }

    /// <summary>Ends this manager's life; the chunk memory it covered is reused afterwards.</summary>
    public void Retire() => Volatile.Write(ref _state, Retired);

    /// <summary>Creates the <see cref="Memory{T}"/> covering the whole chunk (used once per manager).</summary>
    internal Memory<T> CreateWholeMemory() => CreateMemory(_length);

    /// <summary>Retires the manager (the chunk owns the memory, so nothing is freed).</summary>
    protected override void Dispose(bool disposing) => Retire();

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowRetired() =>
        throw new ObjectDisposedException(
            nameof(ArenaChunk),
            "This memory was rented from a request arena that has since been released (the request ended); it must no longer be used.");
}
