using System.Diagnostics;
using System.Globalization;
using System.Text;
using Xunit.Abstractions;
using static AllocHosting.Allocators.Tests.PersistentHeapFiles;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Crash consistency with real processes: a child (<see cref="PersistentHeapKillChild"/>) allocates,
/// writes, flushes and frees blocks of a heap file, logging each committed operation, and is killed
/// with SIGKILL at a random moment; the heap is reopened and checked against the log, then the next
/// child carries on with the same file. After every kill: no committed block lost or corrupted (every
/// logged live block is live, with its contents), no block handed out twice (the log never allocates a
/// live offset, and the heap's blocks tile the file), and at most the in-flight allocation is live
/// without a log line, which the checker frees as an application would (<see cref="PersistentHeap.GetLiveBlocks"/>).
/// At the end every block is freed and the whole data area must be one free block again.
/// </summary>
/// <remarks>
/// A short run (a few seconds, a handful of kills) is part of the ordinary test run; a long one is
/// <c>ALLOCHOSTING_STRESS_SECONDS=600 dotnet test tests/Allocators.Tests --filter "Category=Stress&amp;FullyQualifiedName~PersistentHeapKill"</c>
/// (seconds per directory), thousands of kills.
/// </remarks>
[Trait("Category", "Stress")]
public sealed class PersistentHeapKillTests(ITestOutputHelper output)
{
    private const long HeapSize = 256 * 1024;

    [LinuxTheory]
    [MemberData(nameof(Directories), MemberType = typeof(PersistentHeapFiles))]
    public async Task Killed_children_never_lose_a_committed_block(string directory)
    {
        // The disk's flushes are slower; tmpfs gets most of the ordinary run's budget.
        TimeSpan budget = StressBudget.For(TimeSpan.FromSeconds(directory == SharedMemory ? 4 : 2));
        long maxRounds = StressBudget.CountFor(budget, perSecond: 20);
        string heapPath = NewPath(directory);
        string logPath = heapPath + ".log";
        try
        {
            PersistentHeap.Create(heapPath, HeapSize).Dispose();
            var random = new Random(Environment.TickCount);
            var clock = Stopwatch.StartNew();
            int rounds = 0;
            long logged = 0;
            int unlogged = 0;
            while (rounds < maxRounds && (rounds < 2 || clock.Elapsed < budget))
            {
                logged += await RunAndKillAsync(heapPath, logPath, random.Next(), random.Next(0, directory == SharedMemory ? 250 : 800));
                unlogged += CheckAndReclaim(heapPath, logPath, $"round {rounds}");
                rounds++;
            }

            using (var heap = PersistentHeap.Open(heapPath))
            {
                foreach (PersistentHeapBlock block in heap.GetLiveBlocks())
                {
                    heap.FreeOffset(block.Offset, (nuint)block.UsableSize);
                }

                heap.Validate();
                Assert.Equal(4096 + 16, heap.AllocateOffset((nuint)(heap.Capacity - 16)));
            }

            output.WriteLine($"{directory}: {rounds} kills, {logged} log lines, {unlogged} in-flight allocations reclaimed, {clock.Elapsed.TotalSeconds:F1} s");
            Assert.True(logged > 0, "the children logged no operation before being killed");
        }
        finally
        {
            Delete(heapPath, logPath);
        }
    }

    // Starts a child, waits until it has opened the heap, lets it run for `runMilliseconds` and kills it
    // with SIGKILL; returns how many lines the log grew by.
    private static async Task<long> RunAndKillAsync(string heapPath, string logPath, int seed, int runMilliseconds)
    {
        long linesBefore = CountLines(logPath);
        string host = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        string assembly = typeof(PersistentHeapKillChild).Assembly.Location;
        var info = new ProcessStartInfo(host)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(assembly)!,
        };
        foreach (string argument in new[] { assembly, PersistentHeapKillChild.Argument, heapPath, logPath, seed.ToString(CultureInfo.InvariantCulture) })
        {
            info.ArgumentList.Add(argument);
        }

        info.Environment["DOTNET_DbgEnableMiniDump"] = "0";
        using var process = Process.Start(info)!;
        Task<string> errors = process.StandardError.ReadToEndAsync();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            string? line = await process.StandardOutput.ReadLineAsync(timeout.Token);
            if (line != PersistentHeapKillChild.Ready)
            {
                await process.WaitForExitAsync(timeout.Token);
                Assert.Fail($"The child did not start (exit {process.ExitCode}): {line}\n{await errors}");
            }

            await Task.Delay(runMilliseconds, timeout.Token);
            if (process.HasExited)
            {
                Assert.Fail($"The child ended by itself (exit {process.ExitCode}):\n{await errors}");
            }

            process.Kill();   // SIGKILL on Linux
            await process.WaitForExitAsync(timeout.Token);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }

        return CountLines(logPath) - linesBefore;
    }

    // Reopens the heap after a kill and checks it against the log; frees the in-flight allocation the
    // log does not know, settles the interrupted free, and rewrites the log as the live blocks. Returns
    // the number of unlogged blocks freed (0 or 1).
    private static unsafe int CheckAndReclaim(string heapPath, string logPath, string round)
    {
        var (live, pending, error) = PersistentHeapKillChild.ReadLog(logPath);
        Assert.True(error is null, $"{round}: {error}");
        using var heap = PersistentHeap.Open(heapPath);
        heap.Validate();
        var blocks = heap.GetLiveBlocks().ToDictionary(b => b.Offset, b => b.UsableSize);
        foreach ((long offset, (long size, long generation)) in live)
        {
            if (offset == pending)
            {
                continue;
            }

            Assert.True(blocks.TryGetValue(offset, out long usable), $"{round}: the committed block at {offset} ({size} bytes) is not live after the kill");
            Assert.True(usable >= size, $"{round}: the block at {offset} holds {usable} bytes, not {size}");
            long mismatch = FirstMismatch(heap.ToPointer(offset), offset, generation, size);
            Assert.True(mismatch < 0, $"{round}: the committed block at {offset} lost its contents at byte {mismatch}");
        }

        if (pending != 0 && !blocks.ContainsKey(pending))
        {
            live.Remove(pending);   // the interrupted free committed
        }

        var extra = blocks.Keys.Where(offset => !live.ContainsKey(offset)).ToList();
        Assert.True(extra.Count <= 1, $"{round}: {extra.Count} live blocks the log does not know (at most the one allocation in flight may be): {string.Join(", ", extra)}");
        foreach (long offset in extra)
        {
            heap.FreeOffset(offset, (nuint)blocks[offset]);
        }

        heap.Validate();
        var text = new StringBuilder();
        foreach ((long offset, (long size, long generation)) in live)
        {
            text.Append(CultureInfo.InvariantCulture, $"A {offset} {size} {generation}\n");
        }

        File.WriteAllText(logPath, text.ToString());
        return extra.Count;
    }

    private static long CountLines(string path) => File.Exists(path) ? File.ReadAllText(path).Count(c => c == '\n') : 0;
}
