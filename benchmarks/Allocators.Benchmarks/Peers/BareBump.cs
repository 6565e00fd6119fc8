using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Benchmarks.Peers;

/// <summary>The physical floor of allocation: a pointer add, an align and a bounds check, nothing else.</summary>
internal sealed unsafe class BareBump : IDisposable
{
    private readonly byte* _start;
    private readonly byte* _end;
    private byte* _next;

    public BareBump(nuint size)
    {
        _start = (byte*)NativeMemory.AlignedAlloc(size, 4096);
        _end = _start + size;
        _next = _start;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Allocate(nuint size, nuint alignment)
    {
        byte* candidate = (byte*)(((nuint)_next + alignment - 1) & ~(alignment - 1));
        if ((nuint)(_end - candidate) < size)
        {
            return null;
        }

        _next = candidate + size;
        return candidate;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Reset() => _next = _start;

    public void Dispose() => NativeMemory.AlignedFree(_start);
}
