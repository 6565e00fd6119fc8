using System.Buffers;

namespace AllocHosting;

/// <summary>
/// One segment of a <see cref="ReadOnlySequence{T}"/> over request memory, as <see cref="RequestBufferWriter"/>
/// and <see cref="RequestBufferStream"/> expose what they hold without a copy.
/// </summary>
internal sealed class RequestBufferSegment : ReadOnlySequenceSegment<byte>
{
    /// <summary>The first segment a writer or a stream rents.</summary>
    public const int FirstSize = 4096;

    /// <summary>
    /// The segment to rent after one of <paramref name="size"/> bytes: twice as large, up to one arena
    /// chunk, so a buffer of N bytes holds at most about 2·N and nothing written is ever moved.
    /// </summary>
    public static int NextSize(int size, int chunkCapacity) => (int)Math.Min((long)size * 2, Math.Max(FirstSize, chunkCapacity));

    public RequestBufferSegment(ReadOnlyMemory<byte> memory, long runningIndex)
    {
        Memory = memory;
        RunningIndex = runningIndex;
    }

    /// <summary>Links a segment after this one and returns it.</summary>
    public RequestBufferSegment Append(ReadOnlyMemory<byte> memory)
    {
        var next = new RequestBufferSegment(memory, RunningIndex + Memory.Length);
        Next = next;
        return next;
    }
}
