using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

// Mapped blocks: requests above MaximumHeapBlockSize, or aligned above MaximumHeapAlignment, get a
// mapping of their own from the memory source of the calling thread's heap (so on its node), and are
// known by their address in a table (the segment map does not cover them).
//
// Threading: the table and the mapped blocks' counters are read and written under _mappedLock only;
// every path here is a slow path (a system call at least).
public sealed unsafe partial class NumaHeapAllocator
{
    // Requests above this are refused without asking the kernel (no machine maps 64 TiB).
    private const ulong LargestMapping = 1UL << 46;

    private readonly Lock _mappedLock = new();
    private readonly Dictionary<nuint, MappedBlock> _mapped = [];
    private AllocatorCounters _mappedCounters;
    private long _mappedBytes;

    private long OverSizeMappedBytes => Interlocked.Read(ref _mappedBytes);

    private AllocatorCounters OverSizeCounters()
    {
        lock (_mappedLock)
        {
            return _mappedCounters;
        }
    }

    private bool OwnsMappedBlock(byte* pointer)
    {
        lock (_mappedLock)
        {
            foreach ((nuint start, MappedBlock block) in _mapped)
            {
                if ((nuint)pointer - start < block.Usable)
                {
                    return true;
                }
            }
        }

        return false;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* AllocateMappedSlow(nuint size, nuint alignment)
    {
        if ((ulong)size > LargestMapping || IsDisposed)
        {
            return null;
        }

        nuint usable = Allocator.AlignUp(size, _pageSize);
        nuint aligned = Math.Max(alignment, _pageSize);
        IMemorySource source = CurrentHeap().Source;
        nuint start, obtained, obtainedSize;
        if (source is MemoryMapSource mapped)
        {
            if (!mapped.TryObtainAligned(usable, aligned, out byte* region))
            {
                return null;
            }

            (start, obtained, obtainedSize) = ((nuint)region, (nuint)region, usable);
        }
        else
        {
            if (!source.TryObtain(usable + aligned, out byte* region))
            {
                return null;
            }

            (start, obtained, obtainedSize) = (Allocator.AlignUp((nuint)region, aligned), (nuint)region, usable + aligned);
        }

        lock (_mappedLock)
        {
            _mapped.Add(start, new MappedBlock(obtained, obtainedSize, usable, source));
            _mappedCounters.Allocated(size, usable);
        }

        Interlocked.Add(ref _mappedBytes, (long)obtainedSize);
        return (byte*)start;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void DeallocateMappedSlow(byte* pointer, nuint size)
    {
        MappedBlock block;
        lock (_mappedLock)
        {
            block = FindMapped(pointer, size);
            _mapped.Remove((nuint)pointer);
            _mappedCounters.Freed(block.Usable);
        }

        block.Source.Release((byte*)block.Obtained, block.ObtainedSize);
        Interlocked.Add(ref _mappedBytes, -(long)block.ObtainedSize);
    }

    // Grows or shrinks a mapped block's mapping without moving it (mremap); false when the kernel
    // cannot, when the source is not a memory map, or when the size is beyond any mapping.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryResizeMappedSlow(byte* pointer, nuint currentSize, nuint newSize)
    {
        lock (_mappedLock)
        {
            MappedBlock block = FindMapped(pointer, currentSize);
            if ((ulong)newSize > LargestMapping)
            {
                return false;
            }

            nuint usable = Allocator.AlignUp(newSize, _pageSize);
            if (usable != block.Usable)
            {
                if (block.Source is not MemoryMapSource mapped || block.Obtained != (nuint)pointer
                    || !mapped.TryResizeInPlace(pointer, block.ObtainedSize, usable))
                {
                    return false;
                }

                Interlocked.Add(ref _mappedBytes, (long)usable - (long)block.ObtainedSize);
                _mapped[(nuint)pointer] = block with { ObtainedSize = usable, Usable = usable };
            }

            _mappedCounters.Resized((long)usable - (long)block.Usable);
            return true;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void CheckMappedSlow(byte* pointer, nuint size)
    {
        lock (_mappedLock)
        {
            FindMapped(pointer, size);
        }
    }

    // Under _mappedLock: the mapped block starting at the pointer, checked against the size passed.
    private MappedBlock FindMapped(byte* pointer, nuint size)
    {
        if (!_mapped.TryGetValue((nuint)pointer, out MappedBlock block))
        {
            ThrowIfDisposed();
            Allocator.ThrowNotLive(Name, pointer);
        }

        if (Allocator.AlignUp(size, _pageSize) != block.Usable)
        {
            ThrowBadBlock(2, pointer, size);
        }

        return block;
    }

    private void ReleaseMappedBlocks()
    {
        lock (_mappedLock)
        {
            foreach (MappedBlock block in _mapped.Values)
            {
                block.Source.Release((byte*)block.Obtained, block.ObtainedSize);
            }

            _mapped.Clear();
            _mappedBytes = 0;
        }
    }

    // A mapped block: what was obtained (released on free), and the usable size given.
    private readonly record struct MappedBlock(nuint Obtained, nuint ObtainedSize, nuint Usable, IMemorySource Source);
}
