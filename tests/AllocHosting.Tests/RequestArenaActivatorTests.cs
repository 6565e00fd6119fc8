using AllocHosting.Allocators;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>The merge point for the switchable allocator: the activator the middleware calls around the pipeline.</summary>
public class RequestArenaActivatorTests
{
    [Fact]
    public void The_default_activator_installs_nothing()
    {
        Assert.Null(new NoRequestArenaActivator().Activate(null!));
    }

    [Fact]
    public async Task The_activator_runs_once_per_request_around_the_pipeline_and_its_scope_ends_before_the_release()
    {
        var activator = new RecordingActivator();
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (IRequestBuffers buffers) =>
            {
                buffers.Rent(10);
                return activator.Events.Count == 1 && activator.Events[0] == "activate" ? "inside" : "outside";
            }),
            build: builder => builder.Services.AddSingleton<IRequestArenaActivator>(activator));

        Assert.Equal("inside", await app.Client.GetStringAsync("/"));
        await TestApp.EventuallyAsync(() => activator.Events.Count == 2, "the scope ended");

        Assert.Equal(["activate", "end while active"], activator.Events);
    }

    [Fact]
    public async Task GetContextAllocator_gives_the_current_chunks_allocator_for_the_flow()
    {
        ContextAllocatorKind? kind = null;
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", () => "ok"),
            options => options.ArenaKind = RequestArenaKind.BitSet,
            builder => builder.Services.AddSingleton<IRequestArenaActivator>(new ContextActivator(k => kind = k)));

        await app.Client.GetStringAsync("/");

        Assert.Equal(ContextAllocatorKind.MediumLived, kind);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the chunk is back");
    }

    private sealed class RecordingActivator : IRequestArenaActivator
    {
        public List<string> Events { get; } = [];

        public IDisposable? Activate(RequestArena arena)
        {
            Events.Add("activate");
            return new Scope(() => Events.Add(arena.IsActive ? "end while active" : "end after release"));
        }
    }

    private sealed class ContextActivator(Action<ContextAllocatorKind> seen) : IRequestArenaActivator
    {
        public IDisposable? Activate(RequestArena arena)
        {
            seen(arena.GetContextAllocator(arena.Lease).Kind);
            return null;
        }
    }

    private sealed class Scope(Action end) : IDisposable
    {
        public void Dispose() => end();
    }
}
