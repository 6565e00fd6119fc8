using System.Runtime.CompilerServices;
using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// A counter added to by many threads at once: one stripe per processor (the same stripes as
/// <see cref="ProcessorSlots{T}"/>), summed when read, so that adds from different cores do not
/// bounce one cache line.
/// </summary>
/// <remarks>Threads: any thread may add or read at any time; adds are atomic, a read is a snapshot.</remarks>
internal sealed class ProcessorCounter
{
    private readonly ProcessorStripes<long> _cells = new();

    /// <summary>The sum of every add so far (a snapshot while adds run).</summary>
    public long Value
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _cells.StripeCount; i++)
            {
                sum += Volatile.Read(ref _cells[i]);
            }

            return sum;
        }
    }

    /// <summary>Adds <paramref name="value"/> in the stripe of slot <paramref name="index"/> (a <see cref="ProcessorSlots{T}.CurrentIndex"/>; indexes wrap).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int index, long value) => Interlocked.Add(ref _cells[index], value);
}
