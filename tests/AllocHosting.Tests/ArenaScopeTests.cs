using System.Buffers;
using System.Net;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace AllocHosting.Tests;

/// <summary>
/// Arena scopes (<see cref="IArenaScopeFactory"/>): request memory for work that is not a request, from the
/// same pool and budget; released on dispose, refused afterwards, and reported and reclaimed if never disposed.
/// </summary>
public sealed class ArenaScopeTests
{
    private static Task<TestApp> StartAsync(Action<SwitchableAllocatorOptions>? configure = null, Action<WebApplicationBuilder>? build = null) =>
        TestApp.StartAsync(TestApp.MapRent, configure, build);

    private static ArenaScopeFactory Factory(TestApp app) => app.Services.GetRequiredService<ArenaScopeFactory>();

    [Fact]
    public async Task The_one_line_registers_the_factory_as_a_singleton()
    {
        await using var app = await StartAsync();
        IArenaScopeFactory factory = app.Services.GetRequiredService<IArenaScopeFactory>();
        Assert.Same(factory, app.Services.GetRequiredService<IArenaScopeFactory>());
        Assert.Same(Factory(app), factory);
    }

    [Fact]
    public async Task A_scope_rents_from_the_pool_and_gives_everything_back_on_dispose()
    {
        await using var app = await StartAsync();
        IArenaScopeFactory factory = app.Services.GetRequiredService<IArenaScopeFactory>();

        ArenaScope scope = factory.CreateScope();
        Assert.Equal(0, scope.Used);
        Assert.Equal(0, scope.Capacity);
        Assert.Equal(0, app.Pool.ChunksInUse);   // no memory until the first rent

        Memory<byte> bytes = scope.Rent(1000);
        Assert.True(bytes.Span.IndexOfAnyExcept((byte)0) < 0, "fresh scope memory is zero");
        bytes.Span.Fill(7);
        Memory<long> values = scope.Rent<long>(10);
        values.Span.Fill(-1);
        RequestBufferWriter writer = scope.CreateWriter();
        writer.Write("written"u8);
        RequestBufferStream stream = scope.CreateStream();
        stream.Write("streamed"u8);
        using (IMemoryOwner<byte> owner = scope.AsMemoryPool().Rent(100))
        {
            owner.Memory.Span.Fill(1);
        }

        Memory<byte> large = scope.Rent(app.Pool.ChunkSize * 2);   // a large chunk of the pool
        Assert.True(scope.Used >= 1000 + 80 + large.Length);
        Assert.True(scope.Capacity >= scope.Used);
        Assert.True(app.Pool.ChunksInUse >= 2);
        Assert.True(app.Pool.LiveBytes > 0);
        Assert.Equal(1, app.Pool.ActiveArenas);
        Assert.Equal(1, Factory(app).LiveCount);

        await scope.DisposeAsync();

        Assert.Equal(0, app.Pool.ChunksInUse);
        Assert.Equal(0, app.Pool.LiveBytes);
        Assert.Equal(0, app.Pool.ActiveArenas);
        Assert.Equal(0, Factory(app).LiveCount);
        Assert.Throws<ObjectDisposedException>(() => bytes.Span[0]);
        Assert.Throws<ObjectDisposedException>(() => large.Span[0]);
    }

    [Fact]
    public async Task Scopes_and_requests_share_one_budget_and_a_spent_budget_refuses_a_scope_with_the_same_exception()
    {
        await using var app = await StartAsync(options => options.BudgetPolicy = ArenaBudgetPolicy.Reject);
        IArenaScopeFactory factory = app.Services.GetRequiredService<IArenaScopeFactory>();

        ArenaScope hog = factory.CreateScope();
        int rents = 0;
        Assert.Throws<RequestArenaBudgetExceededException>(() =>
        {
            // Bounded: the budget holds MaxChunks chunks; one more rent than that must be refused.
            for (; rents <= app.Pool.MaxChunks; rents++)
            {
                hog.Rent(app.Pool.ChunkCapacity);
            }
        });
        Assert.Equal(app.Pool.MaxChunks, rents);
        Assert.Equal(app.Pool.MaxChunks, app.Pool.ChunksInUse);

        // Another scope and a request are refused alike, while the hog holds the budget.
        using (ArenaScope other = factory.CreateScope())
        {
            Assert.Throws<RequestArenaBudgetExceededException>(() => other.Rent(10));
        }

        using (HttpResponseMessage refused = await app.Client.GetAsync("/rent?bytes=10"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        }

        // A refused scope rent is the scope's caller's exception, not a request rejected with 503.
        Assert.Equal(1, app.Pool.RejectedCount);

        hog.Dispose();
        Assert.Equal(0, app.Pool.ChunksInUse);
        Assert.Equal("ok", await app.Client.GetStringAsync("/rent?bytes=10"));
    }

    [Fact]
    public async Task Every_member_throws_ObjectDisposedException_after_dispose()
    {
        await using var app = await StartAsync();
        ArenaScope scope = app.Services.GetRequiredService<IArenaScopeFactory>().CreateScope();
        scope.Rent(10);
        scope.Dispose();
        IRequestBuffers buffers = scope;

        Assert.Throws<ObjectDisposedException>(() => scope.Used);
        Assert.Throws<ObjectDisposedException>(() => scope.Capacity);
        Assert.Throws<ObjectDisposedException>(() => scope.Rent(10));
        Assert.Throws<ObjectDisposedException>(() => scope.Rent(-1));   // disposed is checked first
        Assert.Throws<ObjectDisposedException>(() => scope.Rent<int>(10));
        Assert.Throws<ObjectDisposedException>(() => scope.CreateWriter());
        Assert.Throws<ObjectDisposedException>(() => scope.AsMemoryPool());
        Assert.Throws<ObjectDisposedException>(() => scope.CreateStream());
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await scope.ReadBodyAsync());
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await scope.ReadBodySequenceAsync());
        using var content = new ByteArrayContent([1, 2, 3]);
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await scope.ReadContentAsync(content, 10));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await buffers.ReadContentAsync(content, 10));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await buffers.ReadJsonAsync((JsonTypeInfo<int>)System.Text.Json.JsonSerializerOptions.Web.GetTypeInfo(typeof(int))));

        ObjectDisposedException error = Assert.Throws<ObjectDisposedException>(() => scope.Rent(10));
        Assert.Contains(nameof(Every_member_throws_ObjectDisposedException_after_dispose), error.Message, StringComparison.Ordinal);
        Assert.Contains("ArenaScopeTests.cs", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Objects_created_from_a_scope_are_refused_after_it_is_disposed()
    {
        await using var app = await StartAsync();
        ArenaScope scope = app.Services.GetRequiredService<IArenaScopeFactory>().CreateScope();
        RequestBufferWriter writer = scope.CreateWriter();
        MemoryPool<byte> pool = scope.AsMemoryPool();
        Memory<byte> written = writer.GetMemory(10);
        scope.Dispose();

        Assert.Throws<ObjectDisposedException>(() => written.Span[0]);
        Assert.Throws<InvalidOperationException>(() => writer.GetMemory(1024 * 1024));
        Assert.Throws<InvalidOperationException>(() => pool.Rent(10));
        Assert.Equal(0, app.Pool.ChunksInUse);
    }

    [Fact]
    public async Task A_scope_has_no_request_body_but_reads_an_upstream_content()
    {
        await using var app = await StartAsync();
        await using ArenaScope scope = app.Services.GetRequiredService<IArenaScopeFactory>().CreateScope();

        InvalidOperationException noBody = await Assert.ThrowsAsync<InvalidOperationException>(async () => await scope.ReadBodyAsync());
        Assert.Contains("has no request", noBody.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await scope.ReadBodySequenceAsync());
        IRequestBuffers buffers = scope;
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await buffers.ReadJsonAsync<int>());

        using var content = new ByteArrayContent("upstream"u8.ToArray());
        ReadOnlyMemory<byte> read = await scope.ReadContentAsync(content, 100);
        Assert.Equal("upstream"u8.ToArray(), read.ToArray());
        Assert.True(scope.Used >= read.Length);
    }

    [Fact]
    public async Task Dispose_is_idempotent_and_any_number_of_concurrent_disposes_release_once()
    {
        await using var app = await StartAsync();
        IArenaScopeFactory factory = app.Services.GetRequiredService<IArenaScopeFactory>();

        ArenaScope scope = factory.CreateScope();
        scope.Rent(100);
        scope.Dispose();
        scope.Dispose();
        await scope.DisposeAsync();
        Assert.Equal(0, app.Pool.ActiveArenas);

        for (int round = 0; round < 50; round++)
        {
            ArenaScope shared = factory.CreateScope();
            shared.Rent(100);
            RunTogether(3, _ => shared.Dispose());
            Assert.Equal(0, app.Pool.ActiveArenas);   // released once: a second release would go negative
            Assert.Equal(0, app.Pool.ChunksInUse);
        }

        // The arena objects went back to the pool intact: a request still rents and releases.
        Assert.Equal("ok", await app.Client.GetStringAsync("/rent?bytes=100"));
    }

    [Fact]
    public async Task A_rent_racing_with_dispose_either_succeeds_before_the_release_or_throws_ObjectDisposedException()
    {
        await using var app = await StartAsync();
        IArenaScopeFactory factory = app.Services.GetRequiredService<IArenaScopeFactory>();
        var deadline = DateTime.UtcNow.AddSeconds(5);
        int succeeded = 0, refused = 0;

        for (int round = 0; round < 200 && DateTime.UtcNow < deadline; round++)
        {
            ArenaScope scope = factory.CreateScope();
            RunTogether(3, thread =>
            {
                if (thread == 0)
                {
                    Thread.SpinWait(50 * round);   // the dispose lands at a different point of the rents each round
                    scope.Dispose();
                    return;
                }

                for (int i = 0; i < 200; i++)
                {
                    try
                    {
                        scope.Rent(i % 3 == 0 ? 5000 : 64).Span.Fill(3);
                        Interlocked.Increment(ref succeeded);
                    }
                    catch (ObjectDisposedException)
                    {
                        Interlocked.Increment(ref refused);
                        break;
                    }
                }
            });

            Assert.Equal(0, app.Pool.ChunksInUse);
            Assert.Equal(0, app.Pool.LiveBytes);
            Assert.Equal(0, app.Pool.ActiveArenas);
        }

        Assert.True(succeeded > 0, "some rents ran before the dispose");
        Assert.True(refused > 0, "some rents came after the dispose");
        Assert.Equal(0, Factory(app).LiveCount);
        Assert.Equal("ok", await app.Client.GetStringAsync("/rent?bytes=100"));
    }

    // Runs body(0) … body(count - 1) on dedicated threads released together (not pool threads, which a
    // 2-core machine hands out slowly), and waits, bounded, for all of them.
    private static void RunTogether(int count, Action<int> body)
    {
        using var start = new Barrier(count);
        Exception? failure = null;
        Thread[] threads = Enumerable.Range(0, count).Select(i => new Thread(() =>
        {
            try
            {
                start.SignalAndWait(TimeSpan.FromSeconds(5));
                body(i);
            }
            catch (Exception error)
            {
                Interlocked.CompareExchange(ref failure, error, null);
            }
        })
        { IsBackground = true }).ToArray();
        foreach (Thread thread in threads)
        {
            thread.Start();
        }

        foreach (Thread thread in threads)
        {
            Assert.True(thread.Join(TimeSpan.FromSeconds(10)), "a thread finished within 10 s");
        }

        if (failure is not null)
        {
            throw new InvalidOperationException("A thread failed.", failure);
        }
    }

    [Fact]
    public async Task A_scope_never_disposed_is_released_logged_with_its_creation_site_and_counted_when_the_factory_is_disposed()
    {
        var logs = new FakeLogCollector();
        await using var app = await StartAsync(build: b => b.Services.AddSingleton<ILoggerProvider>(new FakeLoggerProvider(logs)));
        ArenaScopeFactory factory = Factory(app);

        ArenaScope forgotten = factory.CreateScope();
        Memory<byte> memory = forgotten.Rent(3000);
        long used = forgotten.Used;
        using (ArenaScope disposed = factory.CreateScope())
        {
            disposed.Rent(10);
        }

        Assert.Equal(1, factory.LiveCount);
        Assert.True(app.Pool.ChunksInUse > 0);

        factory.Dispose();

        Assert.Equal(0, factory.LiveCount);
        Assert.Equal(0, app.Pool.ChunksInUse);
        Assert.Equal(0, app.Pool.ActiveArenas);
        Assert.Throws<ObjectDisposedException>(() => memory.Span[0]);
        Assert.Throws<ObjectDisposedException>(() => forgotten.Rent(1));
        forgotten.Dispose();   // its owner's late dispose does nothing
        Assert.Throws<ObjectDisposedException>(() => factory.CreateScope());

        FakeLogRecord leak = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "ArenaScopeLeaked");
        Assert.Equal(LogLevel.Warning, leak.Level);
        Assert.Contains(nameof(A_scope_never_disposed_is_released_logged_with_its_creation_site_and_counted_when_the_factory_is_disposed), leak.Message, StringComparison.Ordinal);
        Assert.Contains("ArenaScopeTests.cs", leak.Message, StringComparison.Ordinal);
        Assert.Contains($"{used} bytes", leak.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Host_shutdown_reclaims_and_reports_a_scope_never_disposed()
    {
        var logs = new FakeLogCollector();
        var app = await StartAsync(build: b => b.Services.AddSingleton<ILoggerProvider>(new FakeLoggerProvider(logs)));
        RequestArenaPool pool = app.Pool;
        ArenaScope forgotten = app.Services.GetRequiredService<IArenaScopeFactory>().CreateScope();
        forgotten.Rent(100);
        Assert.Equal(1, pool.ActiveArenas);

        await app.DisposeAsync();

        Assert.Equal(0, pool.ActiveArenas);
        Assert.Equal(0, pool.LiveBytes);
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "ArenaScopeLeaked");
        Assert.Throws<ObjectDisposedException>(() => forgotten.Rent(1));
    }
}
