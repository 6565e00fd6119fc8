namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// Where allocators get their large backing regions from: a crude allocator of
/// page-multiple regions (the seed's <c>MemorySource</c>).
/// </summary>
/// <remarks>
/// Regions are aligned to at least <see cref="Granularity"/>, and an allocator that obtains a
/// region gives it back with <see cref="Release"/> and the same size. Whether a source is
/// thread-safe is stated by each implementation.
/// </remarks>
public unsafe interface IMemorySource
{
    /// <summary>The alignment of every region and the unit the source rounds sizes up to (a page, a huge page or a slot).</summary>
    nuint Granularity { get; }

    /// <summary>Obtains a region of at least <paramref name="size"/> bytes.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or larger than the source can ever provide.</exception>
    /// <exception cref="OutOfMemoryException">The source has no room (for example, the operating system refused the mapping or every slot is taken).</exception>
    byte* Obtain(nuint size);

    /// <summary>Obtains a region like <see cref="Obtain"/> but reports exhaustion by returning <see langword="false"/>.</summary>
    bool TryObtain(nuint size, out byte* region);

    /// <summary>Gives back a region obtained from this source with the same <paramref name="size"/>.</summary>
    /// <exception cref="ArgumentException">The region was not obtained from this source (where the source can tell).</exception>
    void Release(byte* region, nuint size);
}
