using System.Globalization;
using AllocHosting.Allocators;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>A NativeList&lt;T&gt; created in a request with InstallContextAllocator on lives in the request's arena and goes with it.</summary>
public class NativeListRequestTests
{
    [Fact]
    public async Task With_the_process_allocator_as_global_the_registered_switchable_allocator_is_the_default_one()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", () => "ok"));

        Assert.Same(SwitchableAllocator.Default, app.Services.GetRequiredService<SwitchableAllocator>());
    }

    // With another global allocator the registered switchable allocator is an instance of its own, and
    // code that takes no allocator uses SwitchableAllocator.Default: inside a request both serve the
    // request's arena.
    [Fact]
    public async Task With_another_global_allocator_a_list_created_in_a_request_still_lives_in_its_arena()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", ListAndBlockInRequest),
            options =>
            {
                options.InstallContextAllocator = true;
                options.GlobalAllocator = GlobalAllocatorKind.NumaHeap;
            });

        Assert.Equal("False True True", await app.Client.GetStringAsync("/"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the chunk is back");
    }

    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public async Task A_list_created_in_a_request_lives_in_its_arena_and_is_released_with_it(RequestArenaKind kind)
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (IRequestBuffers buffers) =>
            {
                // Not disposed on purpose: the arena's release takes the memory back. 5000 ints: the
                // last block (8192 ints, 32 KiB) fits the default 64 KiB chunk of either arena kind
                // (a bit set arena cannot serve a block the size of a whole chunk).
                var list = new NativeList<int>();
                for (int i = 0; i < 5_000; i++)
                {
                    list.Add(i);
                }

                long sum = 0;
                foreach (int value in list)
                {
                    sum += value;
                }

                return sum == 4_999L * 5_000 / 2 ? buffers.Used.ToString(CultureInfo.InvariantCulture) : "wrong sum";
            }),
            options =>
            {
                options.InstallContextAllocator = true;
                options.ArenaKind = kind;
            });

        string answer = await app.Client.GetStringAsync("/");

        Assert.True(long.TryParse(answer, CultureInfo.InvariantCulture, out long used), answer);
        Assert.True(used >= 20_000, $"the arena served the list ({used} bytes used)");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the chunk is back");
    }

    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public async Task A_list_that_outgrows_a_chunk_takes_large_chunks_of_the_request_and_gives_them_back(RequestArenaKind kind)
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (IRequestBuffers buffers) =>
            {
                // 100 000 longs: its last blocks (512 KiB, then 1 MiB) are far beyond a 64 KiB pool chunk.
                using var list = new NativeList<long>();
                for (long i = 0; i < 100_000; i++)
                {
                    list.Add(i * 3);
                }

                long sum = 0;
                foreach (long value in list)
                {
                    sum += value;
                }

                return sum == 3 * (99_999L * 100_000 / 2) ? buffers.Used.ToString(CultureInfo.InvariantCulture) : "wrong sum";
            }),
            ContextArenaForLargeBlocks(kind));

        for (int round = 0; round < 3; round++)
        {
            string answer = await app.Client.GetStringAsync("/");

            Assert.True(long.TryParse(answer, CultureInfo.InvariantCulture, out long used), answer);
            Assert.True(used >= 800_000, $"the arena served the list ({used} bytes used)");
            await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the chunks, large ones too, are back");
        }
    }

    // A block larger than a pool chunk with an alignment above the arena's 16 bytes: the large chunk
    // taken for it has room for the alignment, the block is aligned and all of it is writable, and an
    // alignment larger than any chunk is refused with AllocatorExhaustedException, taking nothing.
    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public async Task A_large_block_aligned_above_16_bytes_is_aligned_and_an_impossible_alignment_is_refused(RequestArenaKind kind)
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", AllocateAligned),
            ContextArenaForLargeBlocks(kind));

        Assert.Equal("aligned,aligned,aligned,refused", await app.Client.GetStringAsync("/"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the large chunks are back");
    }

    // The budget is spent (another request holds most of it) while a list grows: the growth is
    // refused as any rent past the budget is (503 with Retry-After, counted as rejected), every chunk
    // the list's request took goes back, and once the other request ends a list of the same size fits.
    [Fact]
    public async Task A_list_that_grows_past_a_spent_budget_gets_a_503_and_leaks_nothing()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/grow", () =>
                {
                    using var list = new NativeList<long>();
                    for (long i = 0; i < 100_000; i++)
                    {
                        list.Add(i);
                    }

                    return list.Count.ToString(CultureInfo.InvariantCulture);
                });
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    for (int i = 0; i < 24; i++)
                    {
                        buffers.Rent(60_000);   // one 64 KiB chunk each: 1.5 MiB of the 2 MiB budget
                    }

                    holding.SetResult();
                    await release.Task;
                    return "held";
                });
            },
            options =>
            {
                options.InstallContextAllocator = true;
                options.MaxArenaSizePerRequest = 2 * 1024 * 1024;
                options.MemoryBudget = 2 * 1024 * 1024;
                options.BudgetPolicy = ArenaBudgetPolicy.Reject;
            });

        Task<string> held = app.Client.GetStringAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        long holdersChunks = app.Pool.ChunksInUse;

        // 100 000 longs grow through blocks of 128 KiB, 256 KiB, 512 KiB and 1 MiB: past the half MiB left.
        using (HttpResponseMessage refused = await app.Client.GetAsync("/grow"))
        {
            Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            Assert.True(refused.Headers.RetryAfter is not null, "a Retry-After header");
        }

        Assert.Equal(1, app.Pool.RejectedCount);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == holdersChunks, "the refused request's chunks are back");

        release.SetResult();
        Assert.Equal("held", await held);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "every chunk is back");
        Assert.Equal("100000", await app.Client.GetStringAsync("/grow"));
    }

    [Fact]
    public async Task A_list_that_would_pass_the_requests_maximum_fails_with_AllocatorExhaustedException_and_leaks_nothing()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", () =>
            {
                using var list = new NativeList<long>();
                try
                {
                    for (long i = 0; i < 1_000_000; i++)
                    {
                        list.Add(i);
                    }

                    return "grew past the maximum";
                }
                catch (AllocatorExhaustedException)
                {
                    return $"refused at {list.Count}";
                }
            }),
            options =>
            {
                options.InstallContextAllocator = true;
                options.MaxArenaSizePerRequest = 512 * 1024;
            });

        string answer = await app.Client.GetStringAsync("/");

        Assert.StartsWith("refused at ", answer, StringComparison.Ordinal);
        // The list held what fits in 512 KiB of chunks: more than one pool chunk's worth, less than the maximum.
        int count = int.Parse(answer["refused at ".Length..], CultureInfo.InvariantCulture);
        Assert.InRange(count, 64 * 1024 / sizeof(long), 512 * 1024 / sizeof(long));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the chunks are back");
    }

    // The request's arena, of the given kind, as the flow's context allocator, with room for blocks of a few MiB.
    private static Action<SwitchableAllocatorOptions> ContextArenaForLargeBlocks(RequestArenaKind kind) => options =>
    {
        options.InstallContextAllocator = true;
        options.ArenaKind = kind;
        options.MaxArenaSizePerRequest = 8 * 1024 * 1024;
        options.MemoryBudget = 32 * 1024 * 1024;
    };

    private static unsafe string AllocateAligned(IRequestBuffers buffers)
    {
        SwitchableAllocator allocator = SwitchableAllocator.Default;
        var answers = new List<string>();
        foreach (nuint alignment in new nuint[] { 64, 4096, 64 * 1024 })
        {
            const int Size = 200_000;
            byte* block = allocator.Allocate(Size, alignment);
            new Span<byte>(block, Size).Fill(0xA5);
            bool intact = new Span<byte>(block, Size).IndexOfAnyExcept((byte)0xA5) < 0;
            answers.Add((nuint)block % alignment == 0 && intact && buffers.Used >= Size ? "aligned" : $"0x{(nuint)block:X} at {alignment}, {buffers.Used} bytes used");
            allocator.Deallocate(block, Size, alignment);
        }

        long usedBefore = buffers.Used;
        try
        {
            allocator.Allocate(1024, (nuint)1 << 30);
            answers.Add("served an alignment of 1 GiB");
        }
        catch (AllocatorExhaustedException)
        {
            answers.Add(buffers.Used == usedBefore ? "refused" : "refused, but took memory");
        }

        return string.Join(',', answers);
    }

    private static unsafe string ListAndBlockInRequest(IRequestBuffers buffers, SwitchableAllocator registered)
    {
        var list = new NativeList<int>();
        for (int i = 0; i < 5_000; i++)
        {
            list.Add(i);
        }

        long afterList = buffers.Used;
        registered.Deallocate(registered.Allocate(1000, 16), 1000, 16);
        return $"{ReferenceEquals(registered, SwitchableAllocator.Default)} {afterList >= 20_000} {buffers.Used > afterList}";
    }
}
