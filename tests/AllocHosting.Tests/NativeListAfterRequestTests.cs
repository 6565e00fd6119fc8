using System.Runtime.CompilerServices;
using AllocHosting.Allocators;
using Microsoft.AspNetCore.Builder;

namespace AllocHosting.Tests;

/// <summary>
/// A NativeList&lt;T&gt; created in a request and kept past it (a careless cache, a fire-and-forget task)
/// behaves as disposed once the request ends: it neither reads nor writes the arena memory that
/// serves later requests, nor frees their blocks.
/// </summary>
public class NativeListAfterRequestTests
{
    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public async Task A_list_kept_past_its_request_throws_on_every_member_but_Dispose(RequestArenaKind kind)
    {
        NativeList<long>? kept = null;
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/keep", () =>
            {
                var list = new NativeList<long>();
                for (long i = 0; i < 100; i++)
                {
                    list.Add(i);
                }

                kept = list;
                return "kept";
            }),
            options =>
            {
                options.InstallContextAllocator = true;
                options.ArenaKind = kind;
            });

        Assert.Equal("kept", await app.Client.GetStringAsync("/keep"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request's chunk is released");

        NativeList<long> list = Assert.IsType<NativeList<long>>(kept);
        Assert.Throws<ObjectDisposedException>(() => list.Add(100));
        Assert.Throws<ObjectDisposedException>(() => list[0]);
        Assert.Throws<ObjectDisposedException>(() => list.AsSpan());
        Assert.Throws<ObjectDisposedException>(() => list.Count);
        Assert.Throws<ObjectDisposedException>(() => list.EnsureCapacity(100_000));
        list.Dispose();
        await TestApp.EventuallyAsync(() => app.Pool.LiveBytes == 0, "nothing is live");
    }

    // A bit set arena with no reuse delay hands the released chunk to a later request at once, and
    // its first block lands where the kept list's was. Disposing the kept list then must not free
    // that request's block: were it freed, the request's next block of the same size would land on it.
    [Fact]
    public async Task A_list_disposed_after_its_request_never_frees_a_block_of_the_request_that_reuses_its_memory()
    {
        NativeList<long>? kept = null;
        nint keptAddress = 0;
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/keep", () =>
                {
                    kept = FilledList(7, out keptAddress);
                    return "kept";
                });
                a.MapGet("/reuse", () => ReuseAndDisposeTheKeptList(kept!, keptAddress));
            },
            options =>
            {
                options.InstallContextAllocator = true;
                options.ArenaKind = RequestArenaKind.BitSet;
                options.ReuseDelay = TimeSpan.Zero;
            });

        Assert.Equal("kept", await app.Client.GetStringAsync("/keep"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request's chunk is released");

        // Each request may run on either processor slot: a few tries find the slot holding the chunk.
        string answer = "elsewhere";
        for (int attempt = 0; attempt < 100 && answer == "elsewhere"; attempt++)
        {
            answer = await app.Client.GetStringAsync("/reuse");
        }

        Assert.Equal("intact", answer);
    }

    private static unsafe NativeList<long> FilledList(long value, out nint address)
    {
        var list = new NativeList<long>(64);
        for (int i = 0; i < 64; i++)
        {
            list.Add(value);
        }

        address = (nint)Unsafe.AsPointer(ref list[0]);
        return list;
    }

    private static unsafe string ReuseAndDisposeTheKeptList(NativeList<long> kept, nint keptAddress)
    {
        using NativeList<long> mine = FilledList(42, out nint mineAddress);
        if (mineAddress != keptAddress)
        {
            return "elsewhere";
        }

        kept.Dispose();
        using NativeList<long> next = FilledList(43, out nint nextAddress);
        bool mineIntact = mine.AsSpan().IndexOfAnyExcept(42L) < 0;
        return nextAddress != mineAddress && mineIntact ? "intact" : $"freed: next at 0x{nextAddress:X}, mine intact {mineIntact}";
    }
}
