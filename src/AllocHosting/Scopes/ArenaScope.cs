using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting;

/// <summary>
/// Request memory without a request: an arena of the request pool (same chunks, same budget, same
/// metrics, tagged <c>allochosting.arena.owner</c> = <c>scope</c>) that lives until the scope is
/// disposed. For <c>BackgroundService</c> loops, <c>Channel</c> consumers, timers, and work a request
/// hands off (copy what must outlive the request into a scope the work owns). Create it with
/// <see cref="IArenaScopeFactory.CreateScope"/>.
/// </summary>
/// <remarks>
/// <para>
/// Everything <see cref="IRequestBuffers"/> offers works on a scope except what needs an HTTP request:
/// <see cref="ReadBodyAsync"/>, <see cref="ReadBodySequenceAsync"/> and the <c>ReadJsonAsync</c> overloads
/// throw <see cref="InvalidOperationException"/> (there is no request body); <see cref="ReadContentAsync"/>
/// (an upstream response) works. Disposing releases, all at once, everything rented from the scope, clearing
/// it by <see cref="SwitchableAllocatorOptions.ClearPolicy"/>.
/// </para>
/// <para>
/// After <see cref="Dispose"/>, every member of the scope throws <see cref="ObjectDisposedException"/>, and
/// <c>Span</c> on memory rented from it throws <see cref="ObjectDisposedException"/> too; writers, streams and
/// memory pools created from it throw <see cref="InvalidOperationException"/> on a later rent, as request
/// ones do after their request.
/// </para>
/// <para>
/// Threads: rents may come from several threads at once, and <see cref="Dispose"/> may race with them:
/// a rent either completes before the memory is released or throws <see cref="ObjectDisposedException"/>
/// (disposal waits for rents already under way, which take microseconds). Dispose is idempotent.
/// </para>
/// </remarks>
public sealed class ArenaScope : IRequestBuffers, IAsyncDisposable, IDisposable
{
    // _state: bit 0 set once the scope is ending; the other bits count the calls under way (2 each).
    // A call adds 2 and checks bit 0; the end sets bit 0 and waits until no call is under way, so
    // the arena is released only when no call of the scope can still rent from it.
    private const int Ending = 1;
    private const int OneCall = 2;

    private readonly ArenaScopeFactory _factory;
    private readonly RequestArena _arena;
    private readonly int _lease;
    private readonly string _member;
    private readonly string _file;
    private readonly int _line;
    private int _state;

    internal ArenaScope(ArenaScopeFactory factory, RequestArena arena, string member, string file, int line)
    {
        _factory = factory;
        _arena = arena;
        _lease = arena.Lease;
        _member = member;
        _file = file;
        _line = line;
    }

    /// <summary>Bytes rented from the scope so far (alignment padding included).</summary>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    public long Used
    {
        get
        {
            Enter();
            try
            {
                return _arena.GetUsed(_lease);
            }
            finally
            {
                Exit();
            }
        }
    }

    /// <summary>Bytes of arena memory the scope holds now (zero until its first rent).</summary>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    public long Capacity
    {
        get
        {
            Enter();
            try
            {
                return _arena.GetCapacity(_lease);
            }
            finally
            {
                Exit();
            }
        }
    }

    internal RequestArena Arena => _arena;

    internal int Lease => _lease;

    internal string Member => _member;

    internal string File => _file;

    internal int Line => _line;

    /// <summary>Rents <paramref name="length"/> bytes, 16-byte aligned, valid until the scope is disposed; see <see cref="IRequestBuffers.Rent(int)"/>.</summary>
    /// <param name="length">Bytes wanted, zero or more.</param>
    /// <returns>The memory.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="InsufficientMemoryException">The scope's arena is full and the overflow policy is <see cref="ArenaOverflowPolicy.Fail"/>.</exception>
    /// <exception cref="RequestArenaBudgetExceededException">The process-wide arena budget (shared with requests) is spent.</exception>
    public Memory<byte> Rent(int length)
    {
        Enter();
        try
        {
            return _arena.Rent(length, _lease);
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>
    /// Rents <paramref name="length"/> bytes as <see cref="Rent(int)"/> does, but waits asynchronously for memory when the
    /// budget (shared with requests) is spent and the policy is Wait; see <see cref="IRequestBuffers.RentAsync"/>.
    /// </summary>
    /// <param name="length">Bytes wanted, zero or more.</param>
    /// <param name="cancellationToken">Cancels the wait.</param>
    /// <returns>The memory, valid until the scope is disposed.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    /// <exception cref="InvalidOperationException">The scope was disposed while the rent waited.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is negative.</exception>
    /// <exception cref="InsufficientMemoryException">The scope's arena is full and the overflow policy is <see cref="ArenaOverflowPolicy.Fail"/>.</exception>
    /// <exception cref="RequestArenaBudgetExceededException">The budget is spent and the rent may not wait, or waited in vain.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was canceled while the rent waited.</exception>
    public ValueTask<Memory<byte>> RentAsync(int length, CancellationToken cancellationToken = default)
    {
        // Not inside Enter/Exit: a disposal must not wait for a rent that waits for the budget; the
        // arena's lease refuses, under its lock, a rent that resumes after the scope ended.
        ThrowIfDisposed();
        return _arena.RentAsync(length, _lease, cancellationToken);
    }

    /// <summary>Rents room for <paramref name="count"/> values of <typeparamref name="T"/>, aligned for it, valid until the scope is disposed.</summary>
    /// <typeparam name="T">An unmanaged type.</typeparam>
    /// <param name="count">Values wanted, zero or more.</param>
    /// <returns>The memory.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or too large.</exception>
    public Memory<T> Rent<T>(int count)
        where T : unmanaged
    {
        Enter();
        try
        {
            return _arena.Rent<T>(count, _lease);
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Creates a writer that grows inside the scope's arena.</summary>
    /// <returns>The writer, usable until the scope is disposed.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    public RequestBufferWriter CreateWriter()
    {
        Enter();
        try
        {
            return _arena.CreateWriter(_lease);
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>The scope's arena as a <see cref="MemoryPool{T}"/> (one per scope); see <see cref="IRequestBuffers.AsMemoryPool"/>.</summary>
    /// <returns>The pool, usable until the scope is disposed.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    public MemoryPool<byte> AsMemoryPool()
    {
        Enter();
        try
        {
            return _arena.AsMemoryPool(_lease);
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Creates a seekable stream over the scope's memory; see <see cref="RequestBufferStream"/>.</summary>
    /// <returns>An empty stream, usable until it or the scope is disposed.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    public RequestBufferStream CreateStream()
    {
        Enter();
        try
        {
            return _arena.CreateStream(_lease);
        }
        finally
        {
            Exit();
        }
    }

    /// <summary>Not available: a scope has no HTTP request, so no body. Read the request body in the request and copy what the work needs into the scope.</summary>
    /// <param name="cancellationToken">Unused.</param>
    /// <returns>Never returns.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    /// <exception cref="InvalidOperationException">Always, when not disposed.</exception>
    public ValueTask<ReadOnlyMemory<byte>> ReadBodyAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return ThrowNoRequest<ValueTask<ReadOnlyMemory<byte>>>(nameof(ReadBodyAsync));
    }

    /// <summary>Not available: a scope has no HTTP request, so no body (as <see cref="ReadBodyAsync"/>).</summary>
    /// <param name="cancellationToken">Unused.</param>
    /// <returns>Never returns.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    /// <exception cref="InvalidOperationException">Always, when not disposed.</exception>
    public ValueTask<ReadOnlySequence<byte>> ReadBodySequenceAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return ThrowNoRequest<ValueTask<ReadOnlySequence<byte>>>(nameof(ReadBodySequenceAsync));
    }

    /// <summary>Reads an <see cref="HttpContent"/> (an upstream response) whole into the scope's memory; see <see cref="IRequestBuffers.ReadContentAsync"/>.</summary>
    /// <param name="content">The content, for example <c>response.Content</c>.</param>
    /// <param name="maxBytes">The most bytes accepted, 0 to <see cref="int.MaxValue"/>.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The content's bytes, valid until the scope is disposed.</returns>
    /// <exception cref="ObjectDisposedException">The scope was disposed.</exception>
    /// <exception cref="InvalidDataException">The content announces or holds more than <paramref name="maxBytes"/> bytes.</exception>
    public ValueTask<ReadOnlyMemory<byte>> ReadContentAsync(HttpContent content, long maxBytes, CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return RequestContentReader.ReadAsync(this, content, maxBytes, cancellationToken);
    }

    /// <summary>Releases everything rented from the scope (once; later calls do nothing). Thread-safe.</summary>
    public void Dispose()
    {
        if (TryEnd())
        {
            _factory.End(this);
        }
    }

    /// <summary>As <see cref="Dispose"/> (nothing to await: the release is synchronous).</summary>
    /// <returns>A completed task.</returns>
    public ValueTask DisposeAsync()
    {
        Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Where the scope was created.</summary>
    /// <returns>For example <c>arena scope created in ExecuteAsync at Worker.cs:42</c>.</returns>
    public override string ToString() => $"arena scope created in {_member} at {_file}:{_line}";

    /// <summary>
    /// Marks the scope ending and waits until no call of the scope is under way; true for the one
    /// caller (the owner's Dispose or the factory's) that ended it and must release the arena.
    /// </summary>
    internal bool TryEnd()
    {
        if ((Interlocked.Or(ref _state, Ending) & Ending) != 0)
        {
            return false;
        }

        // Calls under way rent for microseconds (longer only while a rent waits for the budget).
        var spin = default(SpinWait);
        while (Volatile.Read(ref _state) != Ending)
        {
            spin.SpinOnce();
        }

        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Enter()
    {
        if ((Interlocked.Add(ref _state, OneCall) & Ending) != 0)
        {
            ThrowDisposedAfterEnter();
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Exit() => Interlocked.Add(ref _state, -OneCall);

    private void ThrowIfDisposed()
    {
        if ((Volatile.Read(ref _state) & Ending) != 0)
        {
            ThrowDisposed();
        }
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDisposedAfterEnter()
    {
        Exit();
        ThrowDisposed();
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowDisposed() =>
        throw new ObjectDisposedException(nameof(ArenaScope), $"The {this} was disposed: its memory is released, and it rents no more. Create a new scope for further work.");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static T ThrowNoRequest<T>(string member) =>
        throw new InvalidOperationException(
            $"{member} reads an HTTP request body, and an arena scope has no request. Read the body in the request (IRequestBuffers.ReadBodyAsync) and copy what the work needs into the scope (scope.Rent, scope.CreateWriter).");
}
