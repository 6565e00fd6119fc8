using System.Buffers;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// A memory pool whose buffers the tests can inspect: each rent is a fresh array filled with
/// <see cref="InitialByte"/> and rounded up to <see cref="Rounding"/> bytes (as real pools round up);
/// it counts rents and returns, and can refuse (out of memory) or return short buffers on demand.
/// </summary>
internal sealed class TestMemoryPool : MemoryPool<byte>
{
    private int _rented;
    private int _returned;

    public int MaxSize { get; init; } = int.MaxValue;

    public int Rounding { get; init; } = 64;

    public byte InitialByte { get; init; } = 0xFF;

    public bool Exhausted { get; set; }

    /// <summary>Bytes to withhold from every buffer, to play a broken pool.</summary>
    public int ShortBy { get; init; }

    public int Rented => Volatile.Read(ref _rented);

    public int Returned => Volatile.Read(ref _returned);

    public byte[]? LastArray { get; private set; }

    public override int MaxBufferSize => MaxSize;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (Exhausted)
        {
            throw new InsufficientMemoryException("test pool exhausted");
        }

        int size = minBufferSize < 0 ? 4096 : minBufferSize;
        size = Math.Max(Rounding, (size + Rounding - 1) / Rounding * Rounding) - ShortBy;
        var array = new byte[size];
        array.AsSpan().Fill(InitialByte);
        LastArray = array;
        Interlocked.Increment(ref _rented);
        return new Owner(this, array);
    }

    protected override void Dispose(bool disposing)
    {
    }

    private sealed class Owner(TestMemoryPool pool, byte[] array) : IMemoryOwner<byte>
    {
        private int _disposed;

        public Memory<byte> Memory => Volatile.Read(ref _disposed) == 0 ? array : throw new ObjectDisposedException(nameof(Owner));

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                Interlocked.Increment(ref pool._returned);
            }
        }
    }
}
