using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// Which minimum blocks of a <see cref="MultipleBinarySearchTreeAllocator"/>'s region start a live
/// block, and of which size class: one byte per minimum block, in native memory obtained at
/// construction and released on <see cref="Release"/>. 0 means "no live block starts here";
/// <c>k + 1</c> means a live block of class k starts here; an over-size block (a run of k
/// top-class blocks) has <see cref="OverSizeStart"/> at its first top block and
/// <see cref="OverSizeContinuation"/> at each following one.
/// </summary>
/// <remarks>
/// A free is accepted only when the byte at the pointer's index is exactly the code of the
/// size class of the size given, so an interior pointer (its byte is 0), a size of another class,
/// and a pointer to a free block are refused in O(1) before anything changes. Costs one byte
/// per minimum block (1/32 of the region with 32-byte blocks), one byte write per allocation and
/// one read and one write per free (per top block for over-size blocks).
/// </remarks>
internal unsafe struct LiveBlockClassMap
{
    private const byte OverSizeStart = 254;
    private const byte OverSizeContinuation = 255;

    private readonly nuint _start;
    private readonly int _minimumShift;
    private readonly int _topClass;
    private readonly nuint _count;
    private byte* _entries;

    /// <summary>A map of the region <c>[start, start + length)</c>, every entry 0 (no live block).</summary>
    public LiveBlockClassMap(nuint start, nuint length, nuint minimumBlockSize, nuint maximumBlockSize)
    {
        _start = start;
        _minimumShift = BitOperations.Log2(minimumBlockSize);
        _topClass = BitOperations.Log2(maximumBlockSize) - _minimumShift;
        _count = Math.Max(length >> _minimumShift, 1);
        _entries = (byte*)NativeMemory.AllocZeroed(_count);
    }

    /// <summary>Records that a live block of class <paramref name="sizeClass"/> (at most the top class) starts at <paramref name="address"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly void Add(nuint address, int sizeClass) => _entries[Index(address)] = (byte)(sizeClass + 1);

    /// <summary>
    /// Takes the live block of class <paramref name="sizeClass"/> (at most the top class) at
    /// <paramref name="address"/> out of the map; false, with nothing changed, when no such block
    /// starts there.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool TryRemove(nuint address, int sizeClass)
    {
        ref byte entry = ref _entries[Index(address)];
        if (entry != (byte)(sizeClass + 1))
        {
            return false;
        }

        entry = 0;
        return true;
    }

    /// <summary>Records a live block of <paramref name="blockSize"/> bytes (a class block or a run of top-class blocks) at <paramref name="address"/>.</summary>
    public readonly void Add(nuint address, nuint blockSize)
    {
        if (blockSize <= TopSize)
        {
            Add(address, BitOperations.Log2(blockSize) - _minimumShift);
            return;
        }

        nuint index = Index(address);
        nuint stride = (nuint)1 << _topClass;
        _entries[index] = OverSizeStart;
        for (nuint i = stride; i < blockSize >> _minimumShift; i += stride)
        {
            _entries[index + i] = OverSizeContinuation;
        }
    }

    /// <summary>
    /// Whether exactly a live block of <paramref name="blockSize"/> bytes starts at
    /// <paramref name="address"/> (for an over-size block: a run of exactly that many top blocks),
    /// the block lying in the region.
    /// </summary>
    public readonly bool Contains(nuint address, nuint blockSize)
    {
        nuint index = Index(address);
        if (blockSize <= TopSize)
        {
            return _entries[index] == (byte)(BitOperations.Log2(blockSize) - _minimumShift + 1);
        }

        if (_entries[index] != OverSizeStart)
        {
            return false;
        }

        nuint stride = (nuint)1 << _topClass;
        nuint end = index + (blockSize >> _minimumShift);
        for (nuint i = index + stride; i < end; i += stride)
        {
            if (_entries[i] != OverSizeContinuation)
            {
                return false;
            }
        }

        return end >= _count || _entries[end] != OverSizeContinuation;
    }

    /// <summary>Forgets the live block of <paramref name="blockSize"/> bytes at <paramref name="address"/> (checked by <see cref="Contains"/> before).</summary>
    public readonly void Remove(nuint address, nuint blockSize)
    {
        nuint index = Index(address);
        _entries[index] = 0;
        nuint stride = (nuint)1 << _topClass;
        for (nuint i = stride; blockSize > TopSize && i < blockSize >> _minimumShift; i += stride)
        {
            _entries[index + i] = 0;
        }
    }

    /// <summary>The number of live blocks recorded and the bytes they cover, for validation: O(region / minimum block).</summary>
    public readonly (long Blocks, long Bytes) Totals()
    {
        long blocks = 0;
        long bytes = 0;
        for (nuint i = 0; i < _count; i++)
        {
            byte entry = _entries[i];
            if (entry is 0)
            {
                continue;
            }

            blocks += entry == OverSizeContinuation ? 0 : 1;
            bytes += entry >= OverSizeStart ? (long)TopSize : 1L << (entry - 1 + _minimumShift);
        }

        return (blocks, bytes);
    }

    /// <summary>Forgets every live block (a reset): O(region / minimum block) bytes cleared.</summary>
    public readonly void Clear() => NativeMemory.Clear(_entries, _count);

    /// <summary>Releases the map's memory; the map must not be used afterwards.</summary>
    public void Release()
    {
        NativeMemory.Free(_entries);
        _entries = null;
    }

    private readonly nuint TopSize => (nuint)1 << (_topClass + _minimumShift);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private readonly nuint Index(nuint address) => (address - _start) >> _minimumShift;
}
