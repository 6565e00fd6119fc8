using System.Globalization;
using System.Text;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// The entry point of the test assembly run as a child process
/// (<c>dotnet AllocHosting.Allocators.Tests.dll --persistent-heap-child HEAP LOG SEED</c>): it opens the
/// heap, reads the blocks it owns from the log, prints <see cref="Ready"/> and then allocates, fills,
/// flushes and frees blocks until it is killed, logging every operation to the side file. Run (and
/// killed with SIGKILL) by <see cref="PersistentHeapKillTests"/>.
/// </summary>
/// <remarks>
/// The log is the child's account of what is committed, each line made durable (fsync) before the
/// next step: <c>A offset size generation</c> once a block is allocated, filled with its pattern and
/// flushed; <c>f offset</c> before a free, <c>F offset</c> after it. So a block with an <c>A</c> line
/// and no <c>f</c> must be live with its contents; the one <c>f</c> without its <c>F</c> may be either;
/// and at most one live block has no line (allocated, killed before it was logged).
/// </remarks>
internal static class PersistentHeapKillChild
{
    public const string Argument = "--persistent-heap-child";
    public const string Ready = "persistent heap child ready";

    // Bounds in count and time: the parent kills the child long before either.
    private const int MaximumOperations = 1_000_000;
    private static readonly TimeSpan MaximumTime = TimeSpan.FromSeconds(30);

    public static int Main(string[] args)
    {
        if (args is not [Argument, string heapPath, string logPath, string seedText])
        {
            Console.Error.WriteLine($"This assembly holds tests; as a program it only runs {Argument} HEAP LOG SEED.");
            return 2;
        }

        Run(heapPath, logPath, int.Parse(seedText, CultureInfo.InvariantCulture));
        return 0;
    }

    /// <summary>Reads a log: the blocks it says are live (offset → size, generation), the offset of a free begun but not logged as done (or 0), and an error when a block was handed out twice.</summary>
    public static (Dictionary<long, (long Size, long Generation)> Live, long PendingFree, string? Error) ReadLog(string logPath)
    {
        var live = new Dictionary<long, (long Size, long Generation)>();
        long pending = 0;
        string text = File.Exists(logPath) ? File.ReadAllText(logPath) : string.Empty;

        // A line cut short by the kill has no newline: it was never made durable, so it is not read.
        int end = text.LastIndexOf('\n');
        foreach (string line in end < 0 ? [] : text[..end].Split('\n'))
        {
            string[] fields = line.Split(' ');
            long offset = long.Parse(fields[1], CultureInfo.InvariantCulture);
            switch (fields[0])
            {
                case "A":
                    if (live.ContainsKey(offset))
                    {
                        return (live, pending, $"offset {offset} was handed out twice: allocated again while live");
                    }

                    live[offset] = (long.Parse(fields[2], CultureInfo.InvariantCulture), long.Parse(fields[3], CultureInfo.InvariantCulture));
                    break;
                case "f":
                    pending = offset;
                    break;
                case "F":
                    live.Remove(offset);
                    pending = 0;
                    break;
            }
        }

        return (live, pending, null);
    }

    private static unsafe void Run(string heapPath, string logPath, int seed)
    {
        var (live, _, _) = ReadLog(logPath);
        using var heap = PersistentHeap.Open(heapPath);
        using var log = new FileStream(logPath, FileMode.Append, FileAccess.Write, FileShare.Read);
        Console.WriteLine(Ready);
        Console.Out.Flush();

        var random = new Random(seed);
        long generation = (long)seed << 20;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < MaximumOperations && clock.Elapsed < MaximumTime; i++)
        {
            if (live.Count < 8 || random.Next(100) < 55)
            {
                long size = random.Next(1, 3000);
                if (heap.TryAllocateOffset((nuint)size, (nuint)1 << random.Next(0, 8), out long offset))
                {
                    generation++;
                    PersistentHeapFiles.Fill(heap.ToPointer(offset), offset, generation, size);
                    heap.Flush(offset, (nuint)size);
                    Append(log, $"A {offset} {size} {generation}");
                    live[offset] = (size, generation);
                    continue;
                }
            }

            if (live.Count > 0)
            {
                long victim = live.Keys.ElementAt(random.Next(live.Count));
                Append(log, $"f {victim}");
                heap.FreeOffset(victim, (nuint)live[victim].Size);
                Append(log, $"F {victim}");
                live.Remove(victim);
            }
        }
    }

    private static void Append(FileStream log, string line)
    {
        log.Write(Encoding.ASCII.GetBytes(line + "\n"));
        log.Flush(flushToDisk: true);
    }
}
