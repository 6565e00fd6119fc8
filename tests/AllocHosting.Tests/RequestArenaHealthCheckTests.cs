using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace AllocHosting.Tests;

public class RequestArenaHealthCheckTests
{
    [Fact]
    public async Task Healthy_with_spare_budget_and_Degraded_when_nearly_spent()
    {
        var holding = new SemaphoreSlim(0);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/hold", async (IRequestBuffers buffers) =>
            {
                buffers.Rent(100);
                holding.Release();
                await release.Task;
            }),
            options =>
            {
                options.MemoryBudget = 4 * 64 * 1024; // four chunks
                options.MaxArenaSizePerRequest = 64 * 1024;
                options.HealthDegradedRatio = 0.75;
            });
        HealthCheckService health = app.Services.GetRequiredService<HealthCheckService>();

        Assert.Equal(HealthStatus.Healthy, (await health.CheckHealthAsync()).Status);
        var requests = Enumerable.Range(0, 3).Select(_ => app.Client.GetAsync("/hold")).ToList();
        for (int i = 0; i < 3; i++)
        {
            Assert.True(await holding.WaitAsync(TimeSpan.FromSeconds(10)));
        }

        HealthReport degraded = await health.CheckHealthAsync();
        release.SetResult();
        await Task.WhenAll(requests);
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the chunks are back");

        Assert.Equal(HealthStatus.Degraded, degraded.Status);
        Assert.Equal(3, degraded.Entries["allochosting"].Data["chunksInUse"]);
        Assert.Equal(HealthStatus.Healthy, (await health.CheckHealthAsync()).Status);
    }

    [Fact]
    public async Task Degraded_for_the_window_after_a_rejection_and_every_probe_agrees()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UnixEpoch);
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/rent", (IRequestBuffers buffers) => buffers.Rent(100).Length),
            options =>
            {
                options.MemoryBudget = 64 * 1024;
                options.MaxArenaSizePerRequest = 64 * 1024;
                options.BudgetPolicy = ArenaBudgetPolicy.Reject;
            },
            build: b => b.Services.AddSingleton<TimeProvider>(time));
        HealthCheckService health = app.Services.GetRequiredService<HealthCheckService>();
        Assert.Equal(HealthStatus.Healthy, (await health.CheckHealthAsync()).Status);

        // Hold the only chunk outside any request so that the next rent is refused.
        var arena = app.Pool.RentArena(new Microsoft.AspNetCore.Http.DefaultHttpContext());
        arena.Rent(10);
        await app.Client.GetAsync("/rent");
        app.Pool.ReturnArena(arena, new Microsoft.AspNetCore.Http.DefaultHttpContext());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the chunk is back");

        // Nothing in use: only the rejection degrades it, for every reader (a liveness and a readiness probe).
        time.Advance(TimeSpan.FromSeconds(10));
        HealthReport first = await health.CheckHealthAsync();
        HealthReport second = await health.CheckHealthAsync();
        Assert.Equal(HealthStatus.Degraded, first.Status);
        Assert.Equal(HealthStatus.Degraded, second.Status);
        Assert.Equal(1L, second.Entries["allochosting"].Data["rejectedTotal"]);
        Assert.Equal(10.0, second.Entries["allochosting"].Data["secondsSinceLastRejection"]);

        // After the window the check is Healthy again; the count stays.
        time.Advance(RequestArenaHealthCheck.RejectionWindow);
        HealthReport later = await health.CheckHealthAsync();
        Assert.Equal(HealthStatus.Healthy, later.Status);
        Assert.Equal(1L, later.Entries["allochosting"].Data["rejectedTotal"]);
    }
}
