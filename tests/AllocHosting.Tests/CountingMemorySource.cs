using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Tests;

/// <summary>A memory source that passes every call to <paramref name="inner"/> and counts the regions it holds: the pool's segments.</summary>
internal sealed unsafe class CountingMemorySource(IMemorySource inner) : IMemorySource
{
    private int _regions;

    /// <summary>Regions obtained and not yet released.</summary>
    public int Regions => Volatile.Read(ref _regions);

    public nuint Granularity => inner.Granularity;

    public byte* Obtain(nuint size)
    {
        byte* region = inner.Obtain(size);
        Interlocked.Increment(ref _regions);
        return region;
    }

    public bool TryObtain(nuint size, out byte* region)
    {
        if (!inner.TryObtain(size, out region))
        {
            return false;
        }

        Interlocked.Increment(ref _regions);
        return true;
    }

    public void Release(byte* region, nuint size)
    {
        inner.Release(region, size);
        Interlocked.Decrement(ref _regions);
    }
}
