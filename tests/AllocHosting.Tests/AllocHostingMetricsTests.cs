using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.Metrics.Testing;
using Microsoft.Extensions.Time.Testing;

namespace AllocHosting.Tests;

[Collection(MeterListenerCollection.Name)]
public class AllocHostingMetricsTests
{
    private static MetricCollector<long> Collect(TestApp app, string instrument) =>
        new(app.Services.GetRequiredService<IMeterFactory>(), AllocHostingMetrics.MeterName, instrument);

    private static Task<TestApp> StartAsync(Action<SwitchableAllocatorOptions>? configure = null) =>
        TestApp.StartAsync(
            a =>
            {
                TestApp.MapRent(a);
                a.MapGet("/noop", () => "ok");
            },
            configure);

    [Fact]
    public async Task Used_is_recorded_once_per_renting_request_with_the_arena_kind()
    {
        await using var app = await StartAsync();
        using var used = Collect(app, "allochosting.request_arena.used");

        // Three rents in one request: a record per rent instead of per request would fail the Single below.
        await app.Client.GetStringAsync("/rent?bytes=1000&times=3");
        await app.Client.GetStringAsync("/noop");
        await TestApp.EventuallyAsync(() => used.GetMeasurementSnapshot().Count >= 1 && app.Pool.ChunksInUse == 0, "the request released");

        var measurement = Assert.Single(used.GetMeasurementSnapshot());
        Assert.InRange(measurement.Value, 3000, 3100);
        Assert.Equal("bump", measurement.Tags[AllocHostingMetrics.ArenaKindTag]);
    }

    [Fact]
    public async Task Used_has_byte_bucket_boundaries_in_powers_of_four_from_256_B_to_64_MiB()
    {
        await using var app = await StartAsync();
        IReadOnlyList<long>? boundaries = null;
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, _) =>
            {
                if (instrument.Name == "allochosting.request_arena.used" && instrument is Histogram<long> histogram)
                {
                    boundaries = histogram.Advice?.HistogramBucketBoundaries;
                }
            },
        };
        listener.Start();

        Assert.NotNull(boundaries);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => 256L << (2 * i)), boundaries);
        Assert.Equal(64L * 1024 * 1024, boundaries[^1]);
    }

    [Fact]
    public async Task Rents_counts_every_rent_from_arena_memory_including_chunks_trimmed_since()
    {
        var time = new FakeTimeProvider();
        await using var app = await TestApp.StartAsync(
            a =>
            {
                TestApp.MapRent(a);
                a.MapGet("/noop", () => "ok");
            },
            build: b => b.Services.AddSingleton<TimeProvider>(time));
        using var rents = Collect(app, "allochosting.request_arena.rents");

        await app.Client.GetStringAsync("/rent?bytes=100&times=5");
        await app.Client.GetStringAsync("/rent?bytes=100&times=2");
        await app.Client.GetStringAsync("/noop");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the requests released");
        rents.RecordObservableInstruments();
        Assert.Equal(7, rents.LastMeasurement!.Value);

        // Trimming disposes the idle chunks (twice: the first trim only notes the low-water mark); their rents still count.
        await TestApp.EventuallyAsync(() => app.Pool.QuarantinedChunks == 0, "the released chunks left the quarantine");
        time.Advance(TimeSpan.FromHours(1));   // TestApp's IdleTrimInterval
        time.Advance(TimeSpan.FromHours(1));
        Assert.Equal(0, app.IdleChunkCount);
        Assert.Equal(0, app.Chunks.ChunkCount);
        await app.Client.GetStringAsync("/rent?bytes=100");
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        rents.RecordObservableInstruments();
        Assert.Equal(8, rents.LastMeasurement!.Value);
    }

    [Fact]
    public async Task Active_goes_up_while_a_request_holds_memory_and_back_down_after()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a =>
        {
            TestApp.MapRent(a);
            a.MapGet("/hold", async (IRequestBuffers buffers) =>
            {
                buffers.Rent(10);
                holding.SetResult();
                await release.Task;
                return "ok";
            });
            a.MapGet("/noop", () => "ok");
        });
        using var active = Collect(app, "allochosting.request_arena.active");

        Task<string> held = app.Client.GetStringAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await app.Client.GetStringAsync("/noop");   // a request that rents nothing is not counted
        active.RecordObservableInstruments();
        Assert.Equal(1, active.LastMeasurement!.Value);

        release.SetResult();
        await held;
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        await app.Client.GetStringAsync("/rent?bytes=10&times=3");   // counted once however often it rents
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        active.RecordObservableInstruments();
        Assert.Equal(0, active.LastMeasurement!.Value);
        Assert.Equal(0, app.Pool.ActiveArenas);
    }

    [Fact]
    public async Task Overflowed_counts_requests_that_needed_more_than_one_chunk()
    {
        await using var app = await StartAsync(options => options.InitialArenaSize = 16 * 1024);
        using var overflowed = Collect(app, "allochosting.request_arena.overflowed");

        await app.Client.GetStringAsync("/rent?bytes=1000");
        await app.Client.GetStringAsync("/rent?bytes=100000"); // larger than a chunk: a large chunk
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0 && app.Pool.LiveBytes == 0, "both released");

        Assert.Equal(1, overflowed.GetMeasurementSnapshot().Sum(m => m.Value));
    }

    [Fact]
    public async Task Allocated_and_live_read_the_pools_counters_and_live_returns_to_zero()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/hold", async (IRequestBuffers buffers) =>
        {
            buffers.Rent(5000);
            holding.SetResult();
            await release.Task;
        }));
        using var allocated = Collect(app, "allochosting.allocated");
        using var live = Collect(app, "allochosting.live");

        Task request = app.Client.GetAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        live.RecordObservableInstruments();
        long liveDuring = live.GetMeasurementSnapshot().Single(m => (string?)m.Tags[AllocHostingMetrics.AllocatorTag] == "request").Value;
        release.SetResult();
        await request;
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        live.Clear();
        live.RecordObservableInstruments();
        allocated.RecordObservableInstruments();

        Assert.InRange(liveDuring, 5000, 5100);
        Assert.Equal(0, live.GetMeasurementSnapshot().Single(m => (string?)m.Tags[AllocHostingMetrics.AllocatorTag] == "request").Value);
        Assert.InRange(allocated.GetMeasurementSnapshot().Single(m => (string?)m.Tags[AllocHostingMetrics.AllocatorTag] == "request").Value, 5000, 5100);
        Assert.Contains(allocated.GetMeasurementSnapshot(), m => (string?)m.Tags[AllocHostingMetrics.AllocatorTag] == "global");
    }

    // allochosting.allocated is a counter: a read while a request holds a thread window (reserved
    // whole, counted in flight) and a read after its release (only what it rented counted) must not go
    // down, or Prometheus would take it for a reset. The pool's own figure does dip here.
    [Fact]
    public async Task Allocated_never_goes_down_across_a_release_that_hands_back_an_unrented_window()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/window", async (IRequestBuffers buffers) =>
        {
            buffers.Rent(64);   // the first rent: carved from the chunk, exactly
            buffers.Rent(64);   // the second: reserves this thread's window (4 KiB), counted whole while the request runs
            holding.SetResult();
            await release.Task;
        }));
        using var allocated = Collect(app, "allochosting.allocated");

        Task request = app.Client.GetAsync("/window");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        long poolDuring = app.Pool.AllocatedBytes;
        allocated.RecordObservableInstruments();
        long during = RequestAllocated(allocated);
        release.SetResult();
        await request;
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
        allocated.Clear();
        allocated.RecordObservableInstruments();
        long after = RequestAllocated(allocated);

        Assert.True(app.Pool.AllocatedBytes < poolDuring, $"the pool's own figure dips at the release ({poolDuring} then {app.Pool.AllocatedBytes}): the case this test is about");
        Assert.True(after >= during, $"allochosting.allocated went down from {during} to {after}");
        Assert.InRange(during, 128, 128 + 4096 + 32);

        static long RequestAllocated(MetricCollector<long> collector) =>
            collector.GetMeasurementSnapshot().Single(m => (string?)m.Tags[AllocHostingMetrics.AllocatorTag] == "request").Value;
    }

    [Fact]
    public async Task Allocated_and_live_report_the_switchable_allocators_thread_local_heaps()
    {
        await using var app = await StartAsync();
        var switchable = app.Services.GetRequiredService<AllocHosting.Allocators.SwitchableAllocator>();
        using var allocated = Collect(app, "allochosting.allocated");
        using var live = Collect(app, "allochosting.live");
        allocated.RecordObservableInstruments();
        long before = allocated.GetMeasurementSnapshot().Single(m => (string?)m.Tags[AllocHostingMetrics.AllocatorTag] == "thread").Value;

        using var pool = new AllocHosting.Allocators.AllocatorMemoryPool(switchable);
        using (switchable.Use(AllocHosting.Allocators.AllocatorKind.ThreadLocal))
        {
            using System.Buffers.IMemoryOwner<byte> owner = pool.Rent(4000);
            live.RecordObservableInstruments();
            allocated.Clear();
            allocated.RecordObservableInstruments();
        }

        long after = allocated.GetMeasurementSnapshot().Single(m => (string?)m.Tags[AllocHostingMetrics.AllocatorTag] == "thread").Value;
        Assert.True(after - before >= 4000, $"thread allocated grew by {after - before}");
        Assert.True(live.GetMeasurementSnapshot().Single(m => (string?)m.Tags[AllocHostingMetrics.AllocatorTag] == "thread").Value >= 4000);
    }

    [Fact]
    public async Task Mapped_reports_bytes_per_numa_node()
    {
        await using var app = await StartAsync();
        using var mapped = Collect(app, "allochosting.mapped");
        await app.Client.GetStringAsync("/rent?bytes=10");

        mapped.RecordObservableInstruments();

        var measurements = mapped.GetMeasurementSnapshot();
        Assert.NotEmpty(measurements);
        Assert.All(measurements, m => Assert.True(m.Tags.ContainsKey(AllocHostingMetrics.NumaNodeTag)));
        Assert.True(measurements.Sum(m => m.Value) >= 16 * 64 * 1024, "one segment of 16 chunks is mapped");
    }

    [Fact]
    public async Task Failures_and_rejected_count_a_spent_budget()
    {
        var holding = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.MapGet("/hold", async (IRequestBuffers buffers) =>
                {
                    buffers.Rent(100);
                    holding.SetResult();
                    await release.Task;
                });
                a.MapGet("/rent", (IRequestBuffers buffers) => buffers.Rent(100).Length);
            },
            options =>
            {
                options.MemoryBudget = 64 * 1024;
                options.MaxArenaSizePerRequest = 64 * 1024;
                options.BudgetPolicy = ArenaBudgetPolicy.Reject;
            });
        using var failures = Collect(app, "allochosting.failures");
        using var rejected = Collect(app, "allochosting.rejected");

        Task holder = app.Client.GetAsync("/hold");
        await holding.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await app.Client.GetAsync("/rent");
        await app.Client.GetAsync("/rent");
        release.SetResult();
        await holder;
        await TestApp.EventuallyAsync(() => rejected.GetMeasurementSnapshot().Count == 2, "both rejections are counted");

        Assert.Equal(2, rejected.GetMeasurementSnapshot().Sum(m => m.Value));
        Assert.All(failures.GetMeasurementSnapshot(), m => Assert.Equal("budget_exhausted", m.Tags[AllocHostingMetrics.ErrorTypeTag]));
        Assert.Equal(2, failures.GetMeasurementSnapshot().Count);
    }

    [Fact]
    public async Task Failures_count_refused_overflow_rents()
    {
        await using var app = await StartAsync(options =>
        {
            options.MaxArenaSizePerRequest = 64 * 1024;
            options.OverflowPolicy = ArenaOverflowPolicy.Fail;
        });
        using var failures = Collect(app, "allochosting.failures");

        await Assert.ThrowsAsync<InsufficientMemoryException>(() => app.Client.GetStringAsync("/rent?bytes=100000"));

        var failure = Assert.Single(failures.GetMeasurementSnapshot());
        Assert.Equal("arena_full", failure.Tags[AllocHostingMetrics.ErrorTypeTag]);
    }
}
