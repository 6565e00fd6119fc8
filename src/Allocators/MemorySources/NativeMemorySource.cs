using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// A portable memory source over <see cref="NativeMemory.AlignedAlloc"/>: the fallback where
/// memory mapping is not available (Windows, macOS) and a simple source for tests.
/// Thread-safe.
/// </summary>
public sealed unsafe class NativeMemorySource : IMemorySource
{
    private long _bytesObtained;

    /// <summary>Creates a source whose regions are aligned to <paramref name="granularity"/> bytes (4 KiB by default).</summary>
    /// <exception cref="ArgumentException"><paramref name="granularity"/> is not a power of two of at least 8.</exception>
    public NativeMemorySource(nuint granularity = 4096)
    {
        if (!Allocator.IsValidAlignment(granularity) || granularity < 8)
        {
            throw new ArgumentException($"Granularity {granularity} must be a power of two between 8 and {Allocator.MaximumAlignment}.", nameof(granularity));
        }

        Granularity = granularity;
    }

    /// <summary>A shared instance with 4 KiB granularity.</summary>
    public static NativeMemorySource Shared { get; } = new();

    /// <inheritdoc />
    public nuint Granularity { get; }

    /// <summary>Bytes obtained and not yet released.</summary>
    public long BytesObtained => Volatile.Read(ref _bytesObtained);

    /// <inheritdoc />
    public byte* Obtain(nuint size)
    {
        if (!TryObtain(size, out byte* region))
        {
            throw new MemorySourceExhaustedException(nameof(NativeMemorySource), size, "the process allocator returned no memory.");
        }

        return region;
    }

    /// <inheritdoc />
    public bool TryObtain(nuint size, out byte* region)
    {
        nuint rounded = RoundSize(size);
        try
        {
            region = (byte*)NativeMemory.AlignedAlloc(rounded, Granularity);
        }
        catch (OutOfMemoryException)
        {
            region = null;
            return false;
        }

        Interlocked.Add(ref _bytesObtained, (long)rounded);
        return true;
    }

    /// <inheritdoc />
    public void Release(byte* region, nuint size)
    {
        ArgumentNullException.ThrowIfNull(region);
        nuint rounded = RoundSize(size);
        NativeMemory.AlignedFree(region);
        Interlocked.Add(ref _bytesObtained, -(long)rounded);
    }

    private nuint RoundSize(nuint size) => SourceSize.Round(size, Granularity, nameof(size));
}
