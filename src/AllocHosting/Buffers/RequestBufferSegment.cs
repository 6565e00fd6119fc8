using System.Buffers;

namespace AllocHosting;

/// <summary>
/// One segment of a <see cref="ReadOnlySequence{T}"/> over request memory, as <see cref="RequestBufferWriter"/>
/// and <see cref="RequestBufferStream"/> expose what they hold without a copy.
/// </summary>
internal sealed class RequestBufferSegment : ReadOnlySequenceSegment<byte>
{
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
