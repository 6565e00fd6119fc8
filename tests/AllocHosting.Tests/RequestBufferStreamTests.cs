using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Compression;
using System.Text;
using CsCheck;
using Microsoft.AspNetCore.Builder;

namespace AllocHosting.Tests;

public class RequestBufferStreamTests
{
    private const int Chunk = 64 * 1024;

    [Fact]
    public async Task Random_operations_match_MemoryStream_as_the_model()
    {
        // Each sample runs in its own request (the model test needs a fresh arena per sample); the
        // steps go in through a dictionary keyed by the query, since CsCheck samples on several threads.
        var pending = new ConcurrentDictionary<int, (int Kind, int Size, int Where)[]>();
        int next = 0;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/model", (IRequestBuffers buffers, int id) =>
        {
            try
            {
                RunModel(buffers.CreateStream(), pending[id]);
                return "ok";
            }
            catch (Exception e)
            {
                return e.ToString();
            }
        }));

        var step = Gen.Select(Gen.Int[0, 7], Gen.Int[0, 20_000], Gen.Int[0, 150_000]);
        step.Array[1, 40].Sample(
            steps =>
            {
                int id = Interlocked.Increment(ref next);
                pending[id] = steps;
                string result = app.Client.GetStringAsync($"/model?id={id}").GetAwaiter().GetResult();
                pending.TryRemove(id, out _);
                Assert.Equal("ok", result);
            },
            iter: 150,
            threads: 2);
    }

    private static void RunModel(RequestBufferStream stream, (int Kind, int Size, int Where)[] steps)
    {
        var model = new MemoryStream();
        var random = new Random(steps.Length);
        foreach (var (kind, size, where) in steps)
        {
            switch (kind)
            {
                case 0:
                case 1:
                    byte[] data = new byte[size];
                    random.NextBytes(data);
                    model.Write(data);
                    if (kind == 0)
                    {
                        stream.Write(data);
                    }
                    else
                    {
                        stream.Write(data, 0, data.Length);
                    }

                    break;
                case 2:
                    byte[] expected = new byte[size], actual = new byte[size];
                    int expectedCount = model.Read(expected);
                    Assert.Equal(expectedCount, stream.Read(actual));
                    Assert.Equal(expected, actual);
                    break;
                case 3:
                    SeekOrigin origin = (SeekOrigin)(size % 3);
                    long offset = origin == SeekOrigin.Begin ? where : where - 75_000;
                    long target = (origin == SeekOrigin.Current ? model.Position : origin == SeekOrigin.End ? model.Length : 0) + offset;
                    if (target < 0)
                    {
                        Assert.Throws<IOException>(() => model.Seek(offset, origin));
                        Assert.Throws<IOException>(() => stream.Seek(offset, origin));
                    }
                    else
                    {
                        Assert.Equal(model.Seek(offset, origin), stream.Seek(offset, origin));
                    }

                    break;
                case 4:
                    model.SetLength(where);
                    stream.SetLength(where);
                    break;
                case 5:
                    model.Position = where;
                    stream.Position = where;
                    break;
                case 6:
                    model.WriteByte((byte)size);
                    stream.WriteByte((byte)size);
                    break;
                default:
                    Assert.Equal(model.ReadByte(), stream.ReadByte());
                    break;
            }

            Assert.Equal(model.Length, stream.Length);
            Assert.Equal(model.Position, stream.Position);
        }

        Assert.Equal(model.ToArray(), stream.GetReadOnlySequence().ToArray());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(Chunk)]
    [InlineData(Chunk + 1)]
    [InlineData(3 * Chunk)]
    public async Task Content_of_any_size_reads_back_through_every_view(int size)
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", async (IRequestBuffers buffers) =>
        {
            byte[] data = Pattern(size, 7);
            using RequestBufferStream stream = buffers.CreateStream();
            await stream.WriteAsync(data);
            Assert.Equal(size, stream.Length);
            Assert.Equal(data, stream.GetReadOnlySequence().ToArray());
            Assert.Equal(size <= 4096, stream.TryGetBuffer(out ReadOnlyMemory<byte> single));
            if (size <= 4096)
            {
                Assert.Equal(data, single.ToArray());
            }

            var copy = new MemoryStream();
            stream.WriteTo(copy);
            Assert.Equal(data, copy.ToArray());
            Assert.Equal(size, stream.Position);

            stream.Position = 0;
            var copied = new MemoryStream();
            await stream.CopyToAsync(copied);
            Assert.Equal(data, copied.ToArray());
            Assert.Equal(size, stream.Position);

            stream.Position = 0;
            var read = new byte[size];
            Assert.Equal(size, await stream.ReadAtLeastAsync(read, size, throwOnEndOfStream: false));
            Assert.Equal(data, read);
            Assert.Equal(-1, stream.ReadByte());
            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task A_gzip_round_trip_gives_back_the_bytes()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            byte[] data = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Range(0, 20_000).Select(i => $"line {i}\n")));
            using RequestBufferStream compressed = buffers.CreateStream();
            using (var gzip = new GZipStream(compressed, CompressionLevel.Fastest, leaveOpen: true))
            {
                gzip.Write(data);
            }

            compressed.Position = 0;
            using RequestBufferStream plain = buffers.CreateStream();
            using (var gunzip = new GZipStream(compressed, CompressionMode.Decompress, leaveOpen: true))
            {
                gunzip.CopyTo(plain);
            }

            Assert.Equal(data, plain.GetReadOnlySequence().ToArray());
            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task A_zip_archive_is_created_with_seeks_and_read_back()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            using RequestBufferStream stream = buffers.CreateStream();
            using (var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true))
            {
                for (int i = 0; i < 3; i++)
                {
                    using Stream entry = zip.CreateEntry($"file{i}.bin").Open();
                    entry.Write(Pattern(50_000 + i, i));
                }
            }

            stream.Position = 0;
            using (var zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true))
            {
                Assert.Equal(3, zip.Entries.Count);
                for (int i = 0; i < 3; i++)
                {
                    using Stream entry = zip.GetEntry($"file{i}.bin")!.Open();
                    var content = new MemoryStream();
                    entry.CopyTo(content);
                    Assert.Equal(Pattern(50_000 + i, i), content.ToArray());
                }
            }

            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task StreamWriter_and_StreamReader_round_trip_text()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", async (IRequestBuffers buffers) =>
        {
            string text = string.Concat(Enumerable.Range(0, 10_000).Select(i => $"é{i};"));
            using RequestBufferStream stream = buffers.CreateStream();
            await using (var writer = new StreamWriter(stream, Encoding.UTF8, leaveOpen: true))
            {
                await writer.WriteAsync(text);
            }

            stream.Seek(0, SeekOrigin.Begin);
            using var reader = new StreamReader(stream, Encoding.UTF8, leaveOpen: true);
            Assert.Equal(text, await reader.ReadToEndAsync());
            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Bad_arguments_throw_as_MemoryStream_does()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            using RequestBufferStream stream = buffers.CreateStream();
            Assert.Throws<IOException>(() => stream.Seek(-1, SeekOrigin.Begin));
            Assert.Throws<ArgumentOutOfRangeException>(() => stream.Position = -1);
            Assert.Throws<ArgumentOutOfRangeException>(() => stream.SetLength(-1));
            Assert.Throws<ArgumentOutOfRangeException>(() => stream.Write(new byte[4], 2, 3));
            Assert.Throws<ArgumentNullException>(() => stream.CopyTo(null!));
            Assert.True(stream.CanRead && stream.CanWrite && stream.CanSeek);
            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Use_after_Dispose_throws_ObjectDisposedException()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", async (IRequestBuffers buffers) =>
        {
            RequestBufferStream stream = buffers.CreateStream();
            stream.Write(Pattern(10, 1));
            stream.Dispose();
            stream.Dispose();
            await AssertEveryMemberThrowsAsync(stream);
            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Use_after_the_request_ended_throws_and_never_touches_a_later_request()
    {
        RequestBufferStream? kept = null;
        await using var app = await TestApp.StartAsync(a =>
        {
            a.MapGet("/keep", (IRequestBuffers buffers) =>
            {
                kept = buffers.CreateStream();
                kept.Write(Pattern(Chunk + 1, 11));
                return "ok";
            });
            a.MapGet("/later", async (IRequestBuffers buffers) =>
            {
                byte[] mine = Pattern(Chunk + 1, 22);
                using RequestBufferStream stream = buffers.CreateStream();
                stream.Write(mine);
                await AssertEveryMemberThrowsAsync(kept!);
                Assert.Equal(mine, stream.GetReadOnlySequence().ToArray());
                return "ok";
            });
        });

        Assert.Equal("ok", await app.Client.GetStringAsync("/keep"));
        await TestApp.EventuallyAsync(() => !kept!.CanRead, "the first request released its arena");
        Assert.Equal("ok", await app.Client.GetStringAsync("/later"));
        await AssertEveryMemberThrowsAsync(kept!);
        kept!.Dispose();
    }

    private static async Task AssertEveryMemberThrowsAsync(RequestBufferStream stream)
    {
        Assert.False(stream.CanRead || stream.CanWrite || stream.CanSeek);
        byte[] buffer = new byte[16];
        Assert.Throws<ObjectDisposedException>(() => stream.Length);
        Assert.Throws<ObjectDisposedException>(() => stream.Position);
        Assert.Throws<ObjectDisposedException>(() => stream.Position = 0);
        Assert.Throws<ObjectDisposedException>(() => stream.Seek(0, SeekOrigin.Begin));
        Assert.Throws<ObjectDisposedException>(() => stream.SetLength(0));
        Assert.Throws<ObjectDisposedException>(() => stream.Read(buffer));
        Assert.Throws<ObjectDisposedException>(() => stream.Read(buffer, 0, 16));
        Assert.Throws<ObjectDisposedException>(() => stream.ReadByte());
        Assert.Throws<ObjectDisposedException>(() => stream.Write(buffer));
        Assert.Throws<ObjectDisposedException>(() => stream.Write(buffer, 0, 16));
        Assert.Throws<ObjectDisposedException>(() => stream.WriteByte(1));
        Assert.Throws<ObjectDisposedException>(() => stream.Flush());
        Assert.Throws<ObjectDisposedException>(() => stream.CopyTo(Stream.Null));
        Assert.Throws<ObjectDisposedException>(() => stream.WriteTo(Stream.Null));
        Assert.Throws<ObjectDisposedException>(() => stream.GetReadOnlySequence());
        Assert.Throws<ObjectDisposedException>(() => stream.TryGetBuffer(out _));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => _ = await stream.ReadAsync(buffer.AsMemory()));
#pragma warning disable CA1835 // the array overload is under test
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => _ = await stream.ReadAsync(buffer, 0, 16));
#pragma warning restore CA1835
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await stream.WriteAsync(buffer.AsMemory()));
#pragma warning disable CA1835 // the array overload is under test
        await Assert.ThrowsAsync<ObjectDisposedException>(() => stream.WriteAsync(buffer, 0, 16));
#pragma warning restore CA1835
        await Assert.ThrowsAsync<ObjectDisposedException>(() => stream.FlushAsync());
        await Assert.ThrowsAsync<ObjectDisposedException>(() => stream.CopyToAsync(Stream.Null));
        await Assert.ThrowsAsync<ObjectDisposedException>(() => stream.WriteToAsync(Stream.Null));
    }

    private static byte[] Pattern(int size, int seed) =>
        Enumerable.Range(0, size).Select(i => (byte)((i * 31) + (seed * 101) + (i >> 8))).ToArray();
}
