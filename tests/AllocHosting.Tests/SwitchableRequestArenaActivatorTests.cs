using System.Buffers;
using AllocHosting.Allocators;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>The switchable wiring: the request's arena as the context allocator of the request's async flow.</summary>
public class SwitchableRequestArenaActivatorTests
{
    [Fact]
    public async Task By_default_the_flow_stays_in_global_mode_and_requests_stay_lazy()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (SwitchableAllocator switchable) => switchable.Current.ToString()));

        Assert.Equal("Global", await app.Client.GetStringAsync("/"));
        Assert.Equal(0, app.Chunks.ChunkCount);
    }

    [Fact]
    public async Task The_one_line_registers_a_switchable_allocator_with_the_per_thread_allocator()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", () => "ok"));

        var switchable = app.Services.GetRequiredService<SwitchableAllocator>();
        Assert.Same(ThreadLocalAllocator.Shared, switchable.ThreadLocal);
        Assert.Same(NativeMemoryAllocator.Shared, switchable.Global);
    }

    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public async Task When_enabled_switchable_allocations_of_the_request_come_from_its_arena_and_die_with_it(RequestArenaKind kind)
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (SwitchableAllocator switchable, IRequestBuffers buffers) =>
            {
                Assert.Equal(AllocatorKind.Context, switchable.Current);
                RequestArenaContextSource source = Assert.IsType<RequestArenaContextSource>(switchable.ContextSource);
                Assert.True(source.GetContextAllocator().IsThreadSafe);

                // Code that speaks Memory<byte> through the switchable allocator (no unsafe code).
                using var pool = new AllocatorMemoryPool(switchable);
                using IMemoryOwner<byte> owner = pool.Rent(1000);
                owner.Memory.Span.Fill(9);
                return buffers.Used.ToString(System.Globalization.CultureInfo.InvariantCulture);
            }),
            options =>
            {
                options.InstallContextAllocator = true;
                options.ArenaKind = kind;
            });

        long used = long.Parse(await app.Client.GetStringAsync("/"), System.Globalization.CultureInfo.InvariantCulture);

        Assert.True(used >= 1000, $"the arena served the switchable allocation ({used} bytes used)");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "the chunk is back");
        Assert.Equal(AllocatorKind.Global, app.Services.GetRequiredService<SwitchableAllocator>().Current);
    }

    [Fact]
    public async Task When_enabled_switchable_allocations_chain_further_chunks_like_rents_do()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (SwitchableAllocator switchable, IRequestBuffers buffers) =>
            {
                // Three 40 KB blocks: more than one 64 KiB chunk holds.
                using var pool = new AllocatorMemoryPool(switchable);
                var owners = Enumerable.Range(0, 3).Select(_ => pool.Rent(40_000)).ToList();
                owners.ForEach(o => o.Memory.Span.Fill(7));
                bool intact = owners.All(o => !o.Memory.Span.ContainsAnyExcept((byte)7));
                string used = buffers.Used.ToString(System.Globalization.CultureInfo.InvariantCulture);
                owners.ForEach(o => o.Dispose());
                return intact ? used : "overlap";
            }),
            options =>
            {
                options.InstallContextAllocator = true;
                options.InitialArenaSize = 64 * 1024;
                options.MaxArenaSizePerRequest = 256 * 1024;
            });

        string answer = await app.Client.GetStringAsync("/");

        Assert.True(long.TryParse(answer, System.Globalization.CultureInfo.InvariantCulture, out long used), answer);
        Assert.True(used >= 120_000, $"the arena served all three blocks ({used} bytes used)");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the chunks are back");
        Assert.True(app.Chunks.ChunkCount >= 2, "a second chunk was chained");
    }

    [Fact]
    public async Task When_enabled_a_request_that_never_allocates_still_takes_no_chunk()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (SwitchableAllocator switchable) => switchable.Current.ToString()),
            options => options.InstallContextAllocator = true);

        Assert.Equal("Context", await app.Client.GetStringAsync("/"));
        Assert.Equal(0, app.Chunks.ChunkCount);
    }

    [Fact]
    public async Task Work_that_outlives_its_request_cannot_allocate_from_the_arena_afterwards()
    {
        var requestEnded = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task<Exception?>? straggler = null;
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (SwitchableAllocator switchable) =>
            {
                // Fire and forget: the task inherits the request's flow, and allocates after the request ended.
                straggler = Task.Run(async () =>
                {
                    await requestEnded.Task;
                    try
                    {
                        using var pool = new AllocatorMemoryPool(switchable);
                        pool.Rent(100).Dispose();
                        return null;
                    }
                    catch (InvalidOperationException error)
                    {
                        return (Exception?)error;
                    }
                });
                return "ok";
            }),
            options => options.InstallContextAllocator = true);

        await app.Client.GetStringAsync("/");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        requestEnded.SetResult();

        Exception? refused = await straggler!.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Contains("No request arena is active", Assert.IsType<InvalidOperationException>(refused).Message, StringComparison.Ordinal);
        Assert.Equal(0, app.Pool.ChunksInUse);
    }

    [Theory]
    [InlineData(RequestArenaKind.Bump)]
    [InlineData(RequestArenaKind.BitSet)]
    public async Task Switchable_allocations_and_buffer_rents_of_parallel_tasks_never_overlap(RequestArenaKind kind)
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", async (SwitchableAllocator switchable, IRequestBuffers buffers) =>
            {
                using var pool = new AllocatorMemoryPool(switchable);
                // Every task rents and writes; only once all have written is any block checked (a
                // block that overlaps another task's shows that task's byte), and only then are the
                // owned blocks given back (a freed block could be handed to a task still writing).
                var tasks = await Task.WhenAll(Enumerable.Range(0, 8).Select(t => Task.Run(() =>
                {
                    var mine = new List<Memory<byte>>();
                    var owners = new List<IMemoryOwner<byte>>();
                    for (int i = 0; i < 20; i++)
                    {
                        Memory<byte> memory = i % 2 == 0 ? buffers.Rent(64 + i) : Own(pool, owners, 64 + i);
                        memory.Span.Fill((byte)(t + 1));
                        mine.Add(memory);
                    }

                    return (Blocks: mine, Owners: owners);
                })));
                bool intact = tasks.Select((task, t) => task.Blocks.All(m => !m.Span.ContainsAnyExcept((byte)(t + 1)))).All(ok => ok);
                foreach (var task in tasks)
                {
                    task.Owners.ForEach(o => o.Dispose());
                }

                return intact ? "intact" : "overlap";
            }),
            options =>
            {
                options.InstallContextAllocator = true;
                options.ArenaKind = kind;
            });

        Assert.Equal("intact", await app.Client.GetStringAsync("/"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the chunk is back");
    }

    private static Memory<byte> Own(MemoryPool<byte> pool, List<IMemoryOwner<byte>> owners, int length)
    {
        IMemoryOwner<byte> owner = pool.Rent(length);
        owners.Add(owner);
        return owner.Memory;
    }
}
