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
}
