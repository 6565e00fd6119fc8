using AllocHosting.Allocators;
using AllocHosting.Allocators.MemorySources;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging.Testing;

namespace AllocHosting.Tests;

/// <summary>
/// The entry point of the test assembly run as a child process (<c>dotnet AllocHosting.Tests.dll --guard-crash-child MODE</c>):
/// a request rents memory from mapped chunks, keeps a <see cref="Span{T}"/> of it past its release, and writes through it.
/// Under Diagnostics Guard the write must kill the process (the chunk is protected while it waits before reuse); under
/// any other mode it passes unseen and the child prints <see cref="Survived"/>. Run by <see cref="ArenaGuardTests"/>.
/// </summary>
internal static class GuardCrashChild
{
    public const string Argument = "--guard-crash-child";
    public const string Released = "released; writing through the kept span";
    public const string Survived = "the late write passed unseen";

    public static int Main(string[] args)
    {
        if (args is not [Argument, string mode])
        {
            Console.Error.WriteLine($"This assembly holds tests; as a program it only runs {Argument} Off|Track|Guard.");
            return 2;
        }

        WriteLateThroughKeptSpan(Enum.Parse<ArenaDiagnostics>(mode));
        Console.WriteLine(Survived);
        return 0;
    }

    private static void WriteLateThroughKeptSpan(ArenaDiagnostics mode)
    {
        using var meters = new TestMeterFactory();
        using RequestArenaPool pool = ArenaDiagnosticsTests.CreatePool(mode, meters, new FakeLogCollector(), new MemoryMapSource());
        var context = new DefaultHttpContext();
        RequestArena arena = pool.RentArena(context);
        Span<byte> kept = arena.Rent(8192).Span;
        kept.Fill(1);
        pool.ReturnArena(arena, context);

        Console.WriteLine(Released);
        Console.Out.Flush();
        kept[100] = 42;
    }
}
