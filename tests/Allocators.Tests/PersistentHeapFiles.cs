using System.Security.Cryptography;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Where the persistent heap tests put their files: /dev/shm (tmpfs, page cache only) and the
/// temporary directory (normally a disk file system), so that both kinds of mapping are exercised.
/// Every test deletes what it creates.
/// </summary>
public static class PersistentHeapFiles
{
    /// <summary>tmpfs, when the machine has it.</summary>
    public const string SharedMemory = "/dev/shm";

    /// <summary>The directories the theories run in: tmpfs (where present) and the temporary directory.</summary>
    public static TheoryData<string> Directories => [.. DirectoryList];

    /// <summary>tmpfs (where present) and the temporary directory.</summary>
    public static string[] DirectoryList =>
        Directory.Exists(SharedMemory) ? [SharedMemory, Path.GetTempPath()] : [Path.GetTempPath()];

    /// <summary>The directories, each with and without libpmem2 (declined, or used when present).</summary>
    public static TheoryData<string, bool> DirectoriesAndFlush
    {
        get
        {
            var data = new TheoryData<string, bool>();
            foreach (string directory in DirectoryList)
            {
                data.Add(directory, false);
                data.Add(directory, true);
            }

            return data;
        }
    }

    /// <summary>A path for a new file in <paramref name="directory"/> (not created).</summary>
    public static string NewPath(string directory) =>
        Path.Combine(directory, $"allochosting-pheap-{Environment.ProcessId}-{Guid.NewGuid():N}.heap");

    /// <summary>A path in the fastest directory: tmpfs where present.</summary>
    public static string NewPath() => NewPath(Directory.Exists(SharedMemory) ? SharedMemory : Path.GetTempPath());

    /// <summary>Deletes the files, ignoring those already gone.</summary>
    public static void Delete(params string[] paths)
    {
        foreach (string path in paths)
        {
            File.Delete(path);
        }
    }

    /// <summary>The SHA-256 of a file's bytes, with its length: "changes nothing" is checked with it.</summary>
    public static string Hash(string path) =>
        $"{new FileInfo(path).Length}:{Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)))}";

    /// <summary>The byte a block's contents hold at <paramref name="index"/>: a function of the block's offset and a generation, so that a stale or moved block shows.</summary>
    public static byte Pattern(long offset, long generation, long index) =>
        (byte)((offset * 31) ^ (generation * 131) ^ (index * 7) ^ (index >> 8));

    /// <summary>Fills <paramref name="length"/> bytes at <paramref name="pointer"/> with <see cref="Pattern"/>.</summary>
    public static unsafe void Fill(byte* pointer, long offset, long generation, long length)
    {
        for (long i = 0; i < length; i++)
        {
            pointer[i] = Pattern(offset, generation, i);
        }
    }

    /// <summary>The first index where the block differs from <see cref="Pattern"/>, or -1.</summary>
    public static unsafe long FirstMismatch(byte* pointer, long offset, long generation, long length)
    {
        for (long i = 0; i < length; i++)
        {
            if (pointer[i] != Pattern(offset, generation, i))
            {
                return i;
            }
        }

        return -1;
    }
}
