using System.Buffers;
using Microsoft.AspNetCore.Builder;

namespace AllocHosting.Tests;

public class RequestBufferWriterTests
{
    [Fact]
    public async Task A_small_output_stays_in_one_segment_and_both_views_agree()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            RequestBufferWriter writer = buffers.CreateWriter();
            "hello"u8.CopyTo(writer.GetSpan(5));
            writer.Advance(5);
            Assert.True(writer.WrittenSequence.IsSingleSegment);
            Assert.True(writer.WrittenMemory.Span.SequenceEqual("hello"u8));
            return writer.WrittenCount;
        }));

        Assert.Equal("5", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task A_large_output_grows_over_segments_without_losing_bytes()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            RequestBufferWriter writer = buffers.CreateWriter();
            for (int i = 0; i < 100_000; i++)
            {
                writer.GetSpan(1)[0] = (byte)(i % 253);
                writer.Advance(1);
            }

            ReadOnlySequence<byte> sequence = writer.WrittenSequence;
            byte[] expected = Enumerable.Range(0, 100_000).Select(i => (byte)(i % 253)).ToArray();
            Assert.False(sequence.IsSingleSegment);
            Assert.Equal(expected, sequence.ToArray());
            Assert.Equal(expected, writer.WrittenMemory.ToArray());
            Assert.Equal(100_000, writer.WrittenCount);
            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    // The remarks' promise: once writing ended, WrittenMemory read on two threads at once returns the one
    // contiguous copy (the first join publishes it; the other waits for it), not two copies.
    [Fact]
    public async Task WrittenMemory_read_on_two_threads_at_once_returns_one_copy()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            for (int round = 0; round < 30; round++)
            {
                RequestBufferWriter writer = buffers.CreateWriter();
                for (int i = 0; i < 10_000; i++)
                {
                    writer.GetSpan(1)[0] = (byte)(i % 251);
                    writer.Advance(1);
                }

                Assert.False(writer.WrittenSequence.IsSingleSegment);
                using var start = new Barrier(2);
                ReadOnlyMemory<byte> Read()
                {
                    start.SignalAndWait();
                    return writer.WrittenMemory;
                }

                Task<ReadOnlyMemory<byte>> other = Task.Factory.StartNew(Read, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
                ReadOnlyMemory<byte> mine = Read();
                ReadOnlyMemory<byte> theirs = other.GetAwaiter().GetResult();
                if (!(mine.Span == theirs.Span) || !mine.Span.SequenceEqual(writer.WrittenSequence.ToArray()))
                {
                    return $"round {round}: two copies, or a wrong one";
                }
            }

            return "one copy";
        }));

        Assert.Equal("one copy", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task Advance_beyond_the_memory_handed_out_throws()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            RequestBufferWriter writer = buffers.CreateWriter();
            int length = writer.GetMemory(10).Length;
            Assert.Throws<ArgumentOutOfRangeException>(() => writer.Advance(length + 1));
            Assert.Throws<ArgumentOutOfRangeException>(() => writer.Advance(-1));
            return "ok";
        }));

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }

    [Fact]
    public async Task A_rent_refused_while_growing_leaves_the_writer_as_it_was()
    {
        await using var app = await TestApp.StartAsync(
            a => a.MapGet("/", (IRequestBuffers buffers) =>
            {
                RequestBufferWriter writer = buffers.CreateWriter();
                byte[] written = TestBytes.Pattern(1_000, 1);
                writer.Write(written);

                // Beyond the arena's maximum with overflow policy Fail: the segment cannot be rented.
                Assert.Throws<InsufficientMemoryException>(() => writer.GetSpan(200_000));

                Assert.Equal(written.Length, writer.WrittenCount);
                Assert.Equal(written, writer.WrittenSequence.ToArray());
                writer.Write("more"u8);
                Assert.Equal([.. written, .. "more"u8.ToArray()], writer.WrittenMemory.ToArray());
                return "ok";
            }),
            o =>
            {
                o.MaxArenaSizePerRequest = 64 * 1024;
                o.OverflowPolicy = ArenaOverflowPolicy.Fail;
            });

        Assert.Equal("ok", await app.Client.GetStringAsync("/"));
    }
}
