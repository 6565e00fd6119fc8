using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// The scoped <see cref="IRequestBuffers"/>: finds the request's arena through
/// <see cref="IHttpContextAccessor"/> on first use and remembers it with the lease it had, so
/// that use after the request ended (when the pooled arena may serve another request) throws.
/// In a SignalR hub invocation, the hub filter of <c>AddRequestArenas()</c> binds it to the
/// invocation's arena scope first (<see cref="BindToScope"/>), so it never reaches the connection's
/// long-lived request.
/// </summary>
internal sealed class RequestBuffers(IHttpContextAccessor accessor) : IRequestBuffers
{
    // Published together: _lease is written first and _arena last with a release write, and every
    // reader loads _arena with an acquire read before it reads _lease, so a task that sees the arena
    // sees its lease too (on x86 both are plain moves; on arm64 a stale lease would refuse the rent).
    private RequestArena? _arena;
    private int _lease;

    public long Used => Arena().GetUsed(_lease);

    public long Capacity => Arena().GetCapacity(_lease);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Memory<byte> Rent(int length)
    {
        RequestArena? arena = Volatile.Read(ref _arena);
        return arena is not null ? arena.Rent(length, _lease) : ResolveSlow().Rent(length, _lease);
    }

    public ValueTask<Memory<byte>> RentAsync(int length, CancellationToken cancellationToken = default) => Arena().RentAsync(length, _lease, cancellationToken);

    public Memory<T> Rent<T>(int count)
        where T : unmanaged => Arena().Rent<T>(count, _lease);

    public RequestBufferWriter CreateWriter() => Arena().CreateWriter(_lease);

    public MemoryPool<byte> AsMemoryPool() => Arena().AsMemoryPool(_lease);

    public ValueTask<ReadOnlyMemory<byte>> ReadBodyAsync(CancellationToken cancellationToken = default) => Arena().ReadBodyAsync(_lease, cancellationToken);

    public ValueTask<ReadOnlySequence<byte>> ReadBodySequenceAsync(CancellationToken cancellationToken = default) => Arena().ReadBodySequenceAsync(_lease, cancellationToken);

    public RequestBufferStream CreateStream() => Arena().CreateStream(_lease);

    private RequestArena Arena() => Volatile.Read(ref _arena) ?? ResolveSlow();

    /// <summary>
    /// Serves this instance (one per DI scope) from <paramref name="scope"/>'s arena instead of the
    /// request's: for a DI scope that is not a request's (a hub invocation). Called before the
    /// instance is used, on the flow that then uses it; afterwards it is stale as after a request.
    /// </summary>
    internal void BindToScope(ArenaScope scope)
    {
        _lease = scope.Lease;
        Volatile.Write(ref _arena, scope.Arena);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private RequestArena ResolveSlow()
    {
        if (accessor.HttpContext?.Features.Get<IRequestArenaFeature>() is not RequestArena arena || !arena.IsActive)
        {
            return ThrowNoArena();
        }

        _lease = arena.Lease;
        Volatile.Write(ref _arena, arena);
        return arena;
    }

    [DoesNotReturn]
    private static RequestArena ThrowNoArena() =>
        throw new InvalidOperationException(
            "IRequestBuffers found no active request arena: rent only while handling a request that runs through the request-arena middleware "
            + "(services.AddSwitchableAllocators() inserts it; app.UseRequestArena() places it explicitly), never after the request ended or from work that outlives it.");
}
