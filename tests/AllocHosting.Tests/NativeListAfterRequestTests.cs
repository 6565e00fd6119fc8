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

    // Under concurrency: requests leave lists to fire-and-forget tasks that dispose them around the
    // request's end, while other requests (on a bit set arena with no reuse delay, so released chunks
    // serve them at once) keep several lists of their own and check that none of them was handed out
    // twice. A stale dispose that freed a block of a later request shows as two live lists at one
    // address, or as a list whose values another list overwrote.
    [Fact]
    public async Task Lists_disposed_by_tasks_that_outlive_their_requests_never_free_blocks_of_other_requests()
    {
        long disposals = 0;
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/leave", () =>
                {
                    NativeList<long> list = FilledList(-1, out _);
                    _ = Task.Run(async () =>
                    {
                        await Task.Yield();
                        list.Dispose();   // before, during or after the end of the request
                        Interlocked.Increment(ref disposals);
                    });
                    return "left";
                });
                a.MapGet("/keep/{id:long}", async (long id) =>
                {
                    var lists = new List<NativeList<long>>();
                    var addresses = new HashSet<nint>();
                    try
                    {
                        for (int i = 0; i < 8; i++)
                        {
                            lists.Add(FilledList((id * 8) + i, out nint address));
                            if (!addresses.Add(address))
                            {
                                return $"two live lists at 0x{address:X}";
                            }

                            await Task.Yield();   // let the leaving tasks run meanwhile
                        }

                        for (int i = 0; i < lists.Count; i++)
                        {
                            if (lists[i].AsSpan().IndexOfAnyExcept((id * 8) + i) >= 0)
                            {
                                return $"list {i} was overwritten";
                            }
                        }

                        return "intact";
                    }
                    finally
                    {
                        lists.ForEach(list => list.Dispose());
                    }
                });
            },
            options =>
            {
                options.InstallContextAllocator = true;
                options.ArenaKind = RequestArenaKind.BitSet;
                options.ReuseDelay = TimeSpan.Zero;
                options.MemoryBudget = 16 * 1024 * 1024;
            });

        const int Rounds = 300;
        var answers = new List<Task<string>>();
        for (int round = 0; round < Rounds; round++)
        {
            answers.Add(app.Client.GetStringAsync("/leave"));
            answers.Add(app.Client.GetStringAsync($"/keep/{round}"));
            if (answers.Count >= 16)
            {
                foreach (string answer in await Task.WhenAll(answers))
                {
                    Assert.True(answer is "left" or "intact", answer);
                }

                answers.Clear();
            }
        }

        foreach (string answer in await Task.WhenAll(answers))
        {
            Assert.True(answer is "left" or "intact", answer);
        }

        await TestApp.EventuallyAsync(() => Interlocked.Read(ref disposals) == Rounds, "every left list was disposed");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "nothing is live");
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
