using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>A fact that runs only where memory mapping is supported (Linux on x86-64 or arm64) and is skipped, saying why, elsewhere.</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!MemoryMapSource.IsSupported)
        {
            Skip = "Needs Linux on x86-64 or arm64: " + MemoryMapSource.UnsupportedReason;
        }
    }
}

/// <summary>A theory that runs only where memory mapping is supported, like <see cref="LinuxFactAttribute"/>.</summary>
public sealed class LinuxTheoryAttribute : TheoryAttribute
{
    public LinuxTheoryAttribute()
    {
        if (!MemoryMapSource.IsSupported)
        {
            Skip = "Needs Linux on x86-64 or arm64: " + MemoryMapSource.UnsupportedReason;
        }
    }
}

/// <summary>
/// A fact that runs only where memory mapping is supported and at least <c>pages</c> huge pages are
/// reserved (<c>/proc/sys/vm/nr_hugepages</c>, the pool of the default huge page size, 2 MiB on x86-64),
/// and is skipped, saying why, elsewhere.
/// </summary>
public sealed class HugePagesFactAttribute : FactAttribute
{
    private const string NrHugePagesPath = "/proc/sys/vm/nr_hugepages";

    /// <param name="pages">The huge pages the test maps at once.</param>
    public HugePagesFactAttribute(int pages = 1)
    {
        if (!MemoryMapSource.IsSupported)
        {
            Skip = "Needs Linux on x86-64 or arm64: " + MemoryMapSource.UnsupportedReason;
            return;
        }

        long? reserved = ReadReservedHugePages();
        if (reserved is null)
        {
            Skip = $"Needs reserved huge pages, but {NrHugePagesPath} could not be read.";
        }
        else if (reserved < pages)
        {
            Skip = $"Needs at least {pages} reserved huge page(s); {NrHugePagesPath} is {reserved} (reserve some with: sysctl vm.nr_hugepages={Math.Max(pages, 8)}).";
        }
    }

    private static long? ReadReservedHugePages()
    {
        try
        {
            return long.TryParse(File.ReadAllText(NrHugePagesPath).Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long pages) ? pages : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
