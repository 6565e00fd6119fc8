namespace AllocHosting.Allocators.MemorySources;

/// <summary>Chooses the best memory source for the machine the process runs on.</summary>
public static class MemorySource
{
    /// <summary>
    /// A <see cref="MemoryMapSource"/> with <paramref name="options"/> where memory mapping is supported
    /// (Linux on x86-64 or arm64), otherwise the portable <see cref="NativeMemorySource"/> (page
    /// granularity, no NUMA placement, no huge pages, no locking).
    /// </summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public static IMemorySource CreateDefault(MemoryMapSourceOptions? options = null)
    {
        (options ?? MemoryMapSourceOptions.Default).Validate();
        return MemoryMapSource.IsSupported
            ? new MemoryMapSource(options)
            : new NativeMemorySource((nuint)Environment.SystemPageSize);
    }
}
