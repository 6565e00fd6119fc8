using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// A fact that runs only where /proc/mounts shows a writable file system mounted with the <c>dax</c>
/// option (persistent memory, or an emulated pmem device), and is skipped, saying why, elsewhere.
/// </summary>
public sealed class DaxFactAttribute : FactAttribute
{
    public DaxFactAttribute()
    {
        if (!MemoryMapSource.IsSupported)
        {
            Skip = "Needs Linux on x86-64 or arm64: " + MemoryMapSource.UnsupportedReason;
        }
        else if (FindDaxMount() is null)
        {
            Skip = "Needs a file system mounted with -o dax (see /proc/mounts): this machine has none, so MAP_SYNC cannot be tested here; the msync path is tested on tmpfs and the disk.";
        }
    }

    /// <summary>The mount point of the first writable DAX file system, or null.</summary>
    public static string? FindDaxMount()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/mounts"))
            {
                string[] fields = line.Split(' ');
                if (fields.Length >= 4
                    && fields[3].Split(',').Any(option => option is "dax" or "dax=always")
                    && fields[3].Split(',').Contains("rw")
                    && Directory.Exists(fields[1]))
                {
                    return fields[1];
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return null;
    }
}
