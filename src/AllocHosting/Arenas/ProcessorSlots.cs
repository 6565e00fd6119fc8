using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting;

/// <summary>
/// One-slot caches, one per processor: a take or a give is one atomic exchange on a cache line that
/// only the threads running on that processor touch, so requests on different cores do not bounce a
/// shared line (a single slot for the whole pool made the middleware's per-request cost three times
/// higher with two threads than with one). Every instance has the same number of slots, so one
/// <see cref="CurrentIndex"/> read serves several instances.
/// </summary>
/// <typeparam name="T">What is cached.</typeparam>
internal sealed class ProcessorSlots<T>
    where T : class
{
    private readonly ProcessorSlot[] _slots;
    private readonly int _mask;

    public ProcessorSlots()
    {
        _slots = new ProcessorSlot[SlotCount];
        _mask = SlotCount - 1;
    }

    /// <summary>Slots per instance (of every <see cref="ProcessorSlots{T}"/> and <see cref="ProcessorCounter"/>): the processors, rounded up to a power of two, at most 64.</summary>
    public static int SlotCount { get; } = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(Environment.ProcessorCount, 1, 64));

    /// <summary>Items in the slots now (a snapshot).</summary>
    public int Count
    {
        get
        {
            int count = 0;
            for (int i = 0; i < _slots.Length; i++)
            {
                if (Volatile.Read(ref _slots[i].Value) is not null)
                {
                    count++;
                }
            }

            return count;
        }
    }

    /// <summary>The slot of the processor the calling thread runs on now: read it once and pass it to the operations of one unit of work (a request), which then stays with that slot even if its thread moves.</summary>
    public int CurrentIndex => Thread.GetCurrentProcessorId() & _mask;

    /// <summary>Takes the item of slot <paramref name="index"/>, if any.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T? Take(int index) => Unsafe.As<T?>(Interlocked.Exchange(ref At(index).Value, null));

    /// <summary>Puts <paramref name="item"/> in slot <paramref name="index"/> if it is empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryPut(T item, int index) => Interlocked.CompareExchange(ref At(index).Value, item, null) is null;

    /// <summary>Puts <paramref name="item"/> in slot <paramref name="index"/>; returns what it displaced.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T? Exchange(T item, int index) => Unsafe.As<T?>(Interlocked.Exchange(ref At(index).Value, item));

    /// <summary>Takes an item from any processor's slot (the caller's first), or null when all are empty.</summary>
    public T? TakeAny()
    {
        if (Take(CurrentIndex) is { } mine)
        {
            return mine;
        }

        for (int i = 0; i < _slots.Length; i++)
        {
            if (Volatile.Read(ref _slots[i].Value) is not null && Interlocked.Exchange(ref _slots[i].Value, null) is { } taken)
            {
                return Unsafe.As<T>(taken);
            }
        }

        return null;
    }

    // index is CurrentIndex of this instance or of another of the same T-independent size (always within the array).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref ProcessorSlot At(int index) =>
        ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_slots), index & _mask);
}

// One slot of a ProcessorSlots, 128 bytes clear of the neighbouring slots on either side
// (adjacent-line prefetchers pair 64-byte lines). Outside ProcessorSlots<T>: a type nested in a
// generic type is generic, and a generic type cannot have an explicit layout.

// One cell of a ProcessorCounter, padded like ProcessorSlot.
