using System.Buffers;
using System.Diagnostics.CodeAnalysis;

namespace AllocHosting;

/// <summary>
/// The request's arena as a <see cref="MemoryPool{T}"/> (<see cref="IRequestBuffers.AsMemoryPool"/>):
/// for <c>new Pipe(new PipeOptions(pool: …))</c>, <c>PipeReader.Create(stream, new
/// StreamPipeReaderOptions(pool: …))</c>, <c>PipeWriter.Create(stream, new StreamPipeWriterOptions(pool: …))</c>
/// and anything else that rents through a pool.
/// </summary>
/// <remarks>
/// <para>
/// Each rent is a rent from the request's arena plus one small owner object (pipelines rent a
/// segment, 4 KiB by default, at a time, so that is one object per segment; the bytes themselves are
/// never on the GC heap). Disposing an owner is cheap and idempotent and gives nothing back: like
/// every request buffer, its memory returns to the pool when the request ends. After its
/// <c>Dispose</c>, and after the request ended, an owner's
/// <see cref="IMemoryOwner{T}.Memory"/> throws <see cref="ObjectDisposedException"/>, and so does
/// <c>Span</c> on a <see cref="Memory{T}"/> taken from it once the request ended.
/// </para>
/// <para>
/// Threads: rents may come from several tasks of the request at once, as for
/// <see cref="IRequestBuffers.Rent(int)"/>. Disposing the pool does nothing: it is the request's, and
/// ends with it.
/// </para>
/// </remarks>
internal sealed class RequestBufferMemoryPool : MemoryPool<byte>
{
    /// <summary>What a rent of -1 (the pool's choice) gets: the segment size pipelines use by default.</summary>
    internal const int DefaultBufferSize = 4096;

    private readonly RequestArena _arena;

    public RequestBufferMemoryPool(RequestArena arena, int lease)
    {
        _arena = arena;
        Lease = lease;
    }

    /// <summary>The lease of the request this pool serves.</summary>
    public int Lease { get; }

    /// <summary>
    /// The largest rent: up to one arena chunk comes from the request's pool chunks, larger rents
    /// from large chunks of the pool, as for <see cref="IRequestBuffers.Rent(int)"/>.
    /// </summary>
    public override int MaxBufferSize => int.MaxValue;

    /// <summary>Rents at least <paramref name="minBufferSize"/> bytes (<see cref="DefaultBufferSize"/> for -1) from the request's arena.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="minBufferSize"/> is below -1.</exception>
    /// <exception cref="InvalidOperationException">The request has ended.</exception>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize < -1)
        {
            ThrowBadSize(minBufferSize);
        }

        int length = minBufferSize == -1 ? DefaultBufferSize : minBufferSize;
        return new Owner(this, _arena.Rent(length, Lease));
    }

    // The pool is the request's: there is nothing to give back before the request ends.
    protected override void Dispose(bool disposing)
    {
    }

    [DoesNotReturn]
    private static void ThrowBadSize(int minBufferSize) =>
        throw new ArgumentOutOfRangeException(nameof(minBufferSize), minBufferSize, "A rent is -1 (the pool's default size) or a length of zero or more.");

    private sealed class Owner(RequestBufferMemoryPool pool, Memory<byte> memory) : IMemoryOwner<byte>
    {
        private bool _disposed;

        public Memory<byte> Memory
        {
            get
            {
                // The lease check makes a stale owner throw even where the Memory would have no
                // Span to fault on (an empty rent).
                ObjectDisposedException.ThrowIf(_disposed || pool._arena.Lease != pool.Lease, this);
                return memory;
            }
        }

        public void Dispose() => _disposed = true;
    }
}
