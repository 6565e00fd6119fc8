namespace AllocHosting.Allocators.Tests;

/// <summary>Runs the README's persistent heap example as written (three "restarts" of a visit counter), and checks that the README shows this code.</summary>
public class ReadmePersistentHeapExampleTests
{
    private const string Heading = "### A persistent heap";

    [LinuxFact]
    public void Readme_persistent_counter_survives_restarts()
    {
        string path = PersistentHeapFiles.NewPath();
        try
        {
            Assert.Equal(1, CountVisit(path));
            Assert.Equal(2, CountVisit(path));
            Assert.Equal(3, CountVisit(path));
            using PersistentHeap reopened = PersistentHeap.Open(path);
            Assert.Single(reopened.GetLiveBlocks());
        }
        finally
        {
            PersistentHeapFiles.Delete(path);
        }

        // ---- begin README example ----
        static unsafe long CountVisit(string path)
        {
            using PersistentHeap heap = File.Exists(path) ? PersistentHeap.Open(path) : PersistentHeap.Create(path, 64 * 1024);
            if (heap.Root == 0)
            {
                long block = heap.AllocateOffset(sizeof(long));   // committed: it survives a crash from here on
                *(long*)heap.ToPointer(block) = 0;
                heap.Flush(block, sizeof(long));
                heap.Root = block;                                // one durable 8-byte store
            }

            long* counter = (long*)heap.ToPointer(heap.Root);
            *counter += 1;                                        // an aligned 8-byte store is never torn
            heap.Flush(heap.Root, sizeof(long));
            return *counter;                                      // 1 in the first run, 2 in the next, ...
        }

        // ---- end README example ----
    }

    [Fact]
    public void The_readme_shows_the_code_this_test_runs()
    {
        string root = RepositoryRoot();
        string readme = File.ReadAllText(Path.Combine(root, "README.md"));
        int start = readme.IndexOf("\n" + Heading, StringComparison.Ordinal);
        Assert.True(start >= 0, $"README.md has the section {Heading}");
        int end = readme.IndexOf("\n#", start + 1, StringComparison.Ordinal);
        string section = readme[start..(end < 0 ? readme.Length : end)];
        Assert.Contains(nameof(ReadmePersistentHeapExampleTests), section, StringComparison.Ordinal);
        string[] blocks = section.Split("```").Where((_, i) => i % 2 == 1).ToArray();
        Assert.Single(blocks);
        Assert.StartsWith("csharp\n", blocks[0], StringComparison.Ordinal);
        string source = Normalise(File.ReadAllText(Path.Combine(root, "tests", "Allocators.Tests", nameof(ReadmePersistentHeapExampleTests) + ".cs")));
        Assert.Contains(Normalise(blocks[0]["csharp\n".Length..]), source, StringComparison.Ordinal);
    }

    // Lines trimmed, blank lines dropped: indentation differs between the README and the test.
    private static string Normalise(string code) =>
        string.Join('\n', code.ReplaceLineEndings("\n").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0));

    private static string RepositoryRoot()
    {
        for (var directory = new DirectoryInfo(AppContext.BaseDirectory); directory is not null; directory = directory.Parent)
        {
            if (File.Exists(Path.Combine(directory.FullName, "AllocHosting.sln")))
            {
                return directory.FullName;
            }
        }

        throw new InvalidOperationException($"No AllocHosting.sln above {AppContext.BaseDirectory}.");
    }
}
