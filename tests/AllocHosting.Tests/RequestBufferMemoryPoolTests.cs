using System.Buffers;
using System.IO.Pipelines;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

/// <summary>IRequestBuffers.AsMemoryPool: the request's arena as a MemoryPool&lt;byte&gt; for pipelines, on the test server.</summary>
public class RequestBufferMemoryPoolTests
{
    [Fact]
    public async Task A_pipe_over_the_pool_carries_bytes_through_request_memory()
    {
        byte[] payload = TestBytes.Pattern(100_000, 1);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", async (IRequestBuffers buffers) =>
        {
            long before = buffers.Used;
            var pipe = new Pipe(new PipeOptions(pool: buffers.AsMemoryPool(), useSynchronizationContext: false));
            Task writing = Task.Run(async () =>
            {
                for (int offset = 0; offset < payload.Length; offset += 7_000)
                {
                    await pipe.Writer.WriteAsync(payload.AsMemory(offset, Math.Min(7_000, payload.Length - offset)));
                }

                await pipe.Writer.CompleteAsync();
            });

            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            while (true)
            {
                ReadResult read = await pipe.Reader.ReadAsync();
                foreach (ReadOnlyMemory<byte> segment in read.Buffer)
                {
                    hash.AppendData(segment.Span);
                }

                pipe.Reader.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted)
                {
                    break;
                }
            }

            await writing;
            await pipe.Reader.CompleteAsync();
            // The pipe's segments came from the arena.
            return $"{Convert.ToHexString(hash.GetHashAndReset())} {buffers.Used - before >= 4096}";
        }));

        Assert.Equal($"{Convert.ToHexString(SHA256.HashData(payload))} True", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task A_pipe_reader_over_the_request_body_reads_it_into_the_pool()
    {
        byte[] body = TestBytes.Pattern(200_000, 2);
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (HttpRequest request, IRequestBuffers buffers) =>
        {
            PipeReader reader = PipeReader.Create(request.Body, new StreamPipeReaderOptions(pool: buffers.AsMemoryPool(), bufferSize: 16 * 1024));
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            long length = 0;
            while (true)
            {
                ReadResult read = await reader.ReadAsync();
                foreach (ReadOnlyMemory<byte> segment in read.Buffer)
                {
                    hash.AppendData(segment.Span);
                }

                length += read.Buffer.Length;
                reader.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted)
                {
                    break;
                }
            }

            await reader.CompleteAsync();
            return $"{length} {Convert.ToHexString(hash.GetHashAndReset())} {buffers.Used >= 16 * 1024}";
        }));

        using HttpResponseMessage response = await app.Client.PostAsync("/", new ByteArrayContent(body));
        Assert.Equal($"{body.Length} {Convert.ToHexString(SHA256.HashData(body))} True", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_pipe_writer_over_the_response_writes_from_the_pool()
    {
        byte[] payload = TestBytes.Pattern(64 * 1024 + 1, 3);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            PipeWriter writer = PipeWriter.Create(context.Response.Body, new StreamPipeWriterOptions(pool: buffers.AsMemoryPool(), minimumBufferSize: 8 * 1024));
            for (int offset = 0; offset < payload.Length; offset += 5_000)
            {
                int length = Math.Min(5_000, payload.Length - offset);
                payload.AsSpan(offset, length).CopyTo(writer.GetSpan(length));
                writer.Advance(length);
            }

            await writer.FlushAsync();
            await writer.CompleteAsync();
            Assert.True(buffers.Used >= 8 * 1024);
        }));

        Assert.Equal(payload, await app.Client.GetByteArrayAsync("/"));
    }

    [Fact]
    public async Task Rents_follow_the_size_rules_and_owners_refuse_use_after_dispose()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            MemoryPool<byte> pool = buffers.AsMemoryPool();
            Assert.Same(pool, buffers.AsMemoryPool());
            Assert.Equal(int.MaxValue, pool.MaxBufferSize);
            Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(-2));

            IMemoryOwner<byte> byDefault = pool.Rent();
            IMemoryOwner<byte> empty = pool.Rent(0);
            IMemoryOwner<byte> beyondChunk = pool.Rent(64 * 1024 + 1);
            Assert.Equal(4096, byDefault.Memory.Length);
            Assert.Equal(0, empty.Memory.Length);
            Assert.Equal(64 * 1024 + 1, beyondChunk.Memory.Length);
            beyondChunk.Memory.Span.Fill(7);

            byDefault.Dispose();
            byDefault.Dispose();
            Assert.Throws<ObjectDisposedException>(() => byDefault.Memory);

            // The pool is the request's: disposing it changes nothing.
            pool.Dispose();
            using IMemoryOwner<byte> after = pool.Rent(10);
            return after.Memory.Length;
        }));

        Assert.Equal("10", await app.Client.GetStringAsync("/"));
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the request released");
    }

    [Fact]
    public async Task The_pool_is_also_reached_through_the_request_arena_feature()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (HttpContext context) =>
        {
            IRequestArenaFeature feature = context.Features.Get<IRequestArenaFeature>()!;
            using IMemoryOwner<byte> owner = feature.AsMemoryPool().Rent(100);
            owner.Memory.Span.Fill(1);
            return feature.Used >= 100;
        }));

        Assert.Equal("true", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Owners_kept_beyond_the_request_throw_and_never_show_a_later_requests_bytes()
    {
        var kept = new List<(IMemoryOwner<byte> Owner, Memory<byte> Memory)>();
        var keptPool = new List<MemoryPool<byte>>();
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers, int id) =>
        {
            MemoryPool<byte> pool = buffers.AsMemoryPool();
            IMemoryOwner<byte> owner = pool.Rent(1000);
            owner.Memory.Span.Fill((byte)id);
            lock (kept)
            {
                kept.Add((owner, owner.Memory));
                keptPool.Add(pool);
            }

            // Every request sees only its own pattern in what it rented.
            return owner.Memory.Span.ContainsAnyExcept((byte)id) ? "mixed" : "own";
        }));

        // Requests run two at a time, so pooled arenas and chunks are reused while owners of ended requests are kept.
        for (int round = 0; round < 20; round++)
        {
            string[] answers = await Task.WhenAll(
                app.Client.GetStringAsync($"/?id={(2 * round) + 1}"),
                app.Client.GetStringAsync($"/?id={(2 * round) + 2}"));
            Assert.All(answers, answer => Assert.Equal("own", answer));
        }

        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "every request released");
        Assert.All(kept, k =>
        {
            Assert.Throws<ObjectDisposedException>(() => k.Owner.Memory);
            Assert.Throws<ObjectDisposedException>(() => k.Memory.Span.Length);
        });
        Assert.All(keptPool, pool => Assert.Throws<InvalidOperationException>(() => pool.Rent(10)));
    }

    [Fact]
    public async Task Asking_for_the_pool_outside_a_request_throws()
    {
        await using var app = await TestApp.StartAsync(_ => { });
        using IServiceScope scope = app.Services.CreateScope();
        IRequestBuffers buffers = scope.ServiceProvider.GetRequiredService<IRequestBuffers>();

        Assert.Throws<InvalidOperationException>(() => buffers.AsMemoryPool());
    }
}
