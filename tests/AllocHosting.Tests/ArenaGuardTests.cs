using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Testing;

namespace AllocHosting.Tests;

/// <summary>
/// Diagnostics Guard: a released chunk's pages are inaccessible while it waits in the quarantine (seen in
/// /proc/self/maps) and accessible again, cleared, when it comes back; a late write through a kept span
/// kills a child process, while the same write under Track passes unseen.
/// </summary>
public class ArenaGuardTests
{
    [Fact]
    public async Task Guard_makes_a_quarantined_chunk_inaccessible_and_gives_it_back_accessible_and_cleared()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;   // mprotect is Linux only
        }

        using var meters = new TestMeterFactory();
        var memory = new MemoryMapSource();

        // ReuseDelay 0: Guard still quarantines, for at least MinGuardReuseDelay.
        using RequestArenaPool pool = ArenaDiagnosticsTests.CreatePool(ArenaDiagnostics.Guard, meters, new FakeLogCollector(), memory, TimeSpan.Zero);
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        Memory<byte> rented = arena.Rent(8192);
        rented.Span.Fill(0xEE);
        nint address = AddressOf(rented.Span);
        Assert.Equal("rw", Permissions(address));
        pool.ReturnArena(arena, context);

        Assert.Equal(1, pool.QuarantinedChunks);
        Assert.Equal("--", Permissions(address));

        // After the delay the chunk leaves (on the timer or the next take): accessible again and cleared.
        var started = Stopwatch.StartNew();
        await TestApp.EventuallyAsync(() => pool.QuarantinedChunks == 0, "the guarded chunk left the quarantine");
        Assert.True(started.Elapsed >= SwitchableAllocatorOptions.MinGuardReuseDelay - TimeSpan.FromMilliseconds(20), $"left after {started.Elapsed}");
        Assert.Equal("rw", Permissions(address));
        Assert.False(At(address, 8192).ContainsAnyExcept((byte)0), "the chunk was cleared as it left");

        RequestArena next = pool.RentArena(context);
        Memory<byte> reused = next.Rent(8192);
        Assert.False(reused.Span.ContainsAnyExcept((byte)0));
        pool.ReturnArena(next, context);
    }

    [Fact]
    public async Task Under_Guard_a_late_write_through_a_kept_span_kills_the_process_and_under_Track_it_passes_unseen()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;   // mprotect is Linux only
        }

        (int trackExit, string trackOutput) = await RunChildAsync(ArenaDiagnostics.Track);
        Assert.True(trackExit == 0, $"the control child (Track) exited with {trackExit}:\n{trackOutput}");
        Assert.Contains(GuardCrashChild.Survived, trackOutput, StringComparison.Ordinal);

        (int guardExit, string guardOutput) = await RunChildAsync(ArenaDiagnostics.Guard);
        Assert.Contains(GuardCrashChild.Released, guardOutput, StringComparison.Ordinal);
        Assert.DoesNotContain(GuardCrashChild.Survived, guardOutput, StringComparison.Ordinal);

        // Killed by the fault: the runtime's SIGSEGV handler reports a fatal AccessViolationException at the
        // writing frame and aborts (SIGABRT, 134); a bare SIGSEGV (139) would do as well.
        Assert.True(guardExit is 139 or 134, $"the Guard child exited with {guardExit}, not by SIGSEGV or the runtime's abort on it:\n{guardOutput}");
        if (guardExit == 134)
        {
            Assert.Contains("System.AccessViolationException", guardOutput, StringComparison.Ordinal);
        }
    }

    private static async Task<(int ExitCode, string Output)> RunChildAsync(ArenaDiagnostics mode)
    {
        string host = Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet" ? Environment.ProcessPath! : "dotnet";
        string assembly = typeof(GuardCrashChild).Assembly.Location;
        var info = new ProcessStartInfo(host)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(assembly)!,
        };
        foreach (string argument in new[] { assembly, GuardCrashChild.Argument, mode.ToString() })
        {
            info.ArgumentList.Add(argument);
        }

        // No crash dump: the fault is expected.
        info.Environment["DOTNET_DbgEnableMiniDump"] = "0";
        using var process = Process.Start(info)!;
        Task<string> output = process.StandardOutput.ReadToEndAsync();
        Task<string> error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(8));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"The {mode} child did not end within 8 s.");
        }

        return (process.ExitCode, await output + await error);
    }

    private static unsafe nint AddressOf(Span<byte> span) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(span));

    private static unsafe ReadOnlySpan<byte> At(nint address, int length) => new((void*)address, length);

    // The protection of the mapping holding address, from /proc/self/maps: "rw", "r-", "--".
    private static string Permissions(nint address)
    {
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            int dash = line.IndexOf('-', StringComparison.Ordinal);
            int space = line.IndexOf(' ', StringComparison.Ordinal);
            ulong start = ulong.Parse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            ulong end = ulong.Parse(line.AsSpan(dash + 1, space - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            if ((ulong)address >= start && (ulong)address < end)
            {
                return line.Substring(space + 1, 2);
            }
        }

        return "unmapped";
    }
}
