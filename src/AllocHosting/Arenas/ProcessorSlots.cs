using System.Runtime.CompilerServices;
using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>
/// One-slot caches, one per processor: a take or a give is one atomic exchange on a cache line that
/// only the threads running on that processor touch, so requests on different cores do not bounce a
/// shared line (a single slot for the whole pool made the middleware's per-request cost three times
/// higher with two threads than with one).
/// </summary>
/// <remarks>
/// Threads: any thread may call any member at any time; each is lock-free. The slots are the stripes
/// of a <see cref="ProcessorStripes{T}"/>, so one <see cref="CurrentIndex"/> read serves every
/// instance and every <see cref="ProcessorCounter"/>.
/// </remarks>
/// <typeparam name="T">What is cached.</typeparam>
internal sealed class ProcessorSlots<T>
    where T : class
{
    private readonly ProcessorStripes<T?> _slots = new();

    /// <summary>Items in the slots now (a snapshot).</summary>
    public int Count
    {
        get
        {
            int count = 0;
            for (int i = 0; i < _slots.StripeCount; i++)
            {
                if (Volatile.Read(ref _slots[i]) is not null)
                {
                    count++;
                }
            }

            return count;
        }
    }

    /// <summary>How many slots there are (a power of two, at least the processor count).</summary>
    public int SlotCount => _slots.StripeCount;

    /// <summary>The slot of the processor the calling thread runs on now: read it once and pass it to the operations of one unit of work (a request), which then stays with that slot even if its thread moves.</summary>
    public int CurrentIndex => _slots.CurrentIndex;

    /// <summary>Takes the item of slot <paramref name="index"/>, if any.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T? Take(int index) => Interlocked.Exchange(ref _slots[index], null);

    /// <summary>Puts <paramref name="item"/> in slot <paramref name="index"/> if it is empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryPut(T item, int index) => Interlocked.CompareExchange(ref _slots[index], item, null) is null;

    /// <summary>Puts <paramref name="item"/> in slot <paramref name="index"/>; returns what it displaced.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T? Exchange(T item, int index) => Interlocked.Exchange(ref _slots[index], item);

    /// <summary>Takes an item from any processor's slot (the caller's first), or null when all are empty.</summary>
    public T? TakeAny()
    {
        if (Take(CurrentIndex) is { } mine)
        {
            return mine;
        }

        for (int i = 0; i < _slots.StripeCount; i++)
        {
            if (Volatile.Read(ref _slots[i]) is not null && Interlocked.Exchange(ref _slots[i], null) is { } taken)
            {
                return taken;
            }
        }

        return null;
    }
}
