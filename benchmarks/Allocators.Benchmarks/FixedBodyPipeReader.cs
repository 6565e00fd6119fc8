using System.IO.Pipelines;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// A request body served from one fixed array in slices of at most <c>slice</c> bytes, as a server hands out
/// what arrived; <see cref="Reset"/> rewinds it for the next operation. It allocates nothing per read.
/// </summary>
internal sealed class FixedBodyPipeReader(byte[] body, int slice) : PipeReader
{
    private int _position;

    public void Reset() => _position = 0;

    public override bool TryRead(out ReadResult result)
    {
        result = Next();
        return true;
    }

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) => ValueTask.FromResult(Next());

    public override void AdvanceTo(SequencePosition consumed) => _position = consumed.GetInteger();

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => AdvanceTo(consumed);

    public override void CancelPendingRead()
    {
    }

    public override void Complete(Exception? exception = null)
    {
    }

    private ReadResult Next()
    {
        int end = Math.Min(body.Length, _position + slice);
        return new ReadResult(new System.Buffers.ReadOnlySequence<byte>(body, _position, end - _position), isCanceled: false, isCompleted: end == body.Length);
    }
}
