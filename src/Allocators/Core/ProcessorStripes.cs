using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// One <typeparamref name="T"/> per processor, each on cache lines of its own: the building block
/// of counters and caches that many threads update at once without bouncing one cache line
/// between cores. A thread works on the stripe of the processor it runs on
/// (<see cref="CurrentIndex"/>); a reader visits every stripe and combines them (a sum, a count).
/// </summary>
/// <remarks>
/// <para>
/// Layout: the stripes are the cells of one array, each <typeparamref name="T"/> with at least 128
/// bytes that nothing touches before and after it (adjacent-line prefetchers pair 64-byte lines),
/// also clear of the array's header and of whatever follows the array. An access is the processor
/// id masked to the stripe count and one address computation: no bounds check, and no indirection
/// beyond the array, since this is a struct that the owner keeps in a field.
/// </para>
/// <para>
/// A handle, like <see cref="ArraySegment{T}"/>: copies share the same stripes. Create it with
/// <see langword="new"/>; a <see langword="default"/> one has no stripes and throws
/// <see cref="NullReferenceException"/> on use.
/// </para>
/// <para>
/// Threads: <see cref="this[int]"/> hands out a reference to a stripe and does not synchronise; the
/// caller chooses how to update it (<see cref="Interlocked"/> when threads may share a stripe, which
/// they do whenever one migrates between reading <see cref="CurrentIndex"/> and the update, or when
/// there are more processors than stripes) and how to read it (a <see cref="Volatile"/>
/// read for a snapshot). The index of a unit of work may be read once and kept: it stays valid, only less
/// local, if the thread moves to another processor.
/// </para>
/// <para>
/// Every instance has <see cref="StripeCount"/> stripes: the processors, rounded up to a power of
/// two, at most 64 (processor ids beyond wrap, which only shares a stripe). So an index read from
/// one instance's <see cref="CurrentIndex"/> serves every other instance too.
/// </para>
/// </remarks>
/// <example>
/// A counter that request threads add to and a metrics callback reads:
/// <code>
/// sealed class RequestCounter
/// {
///     private readonly ProcessorStripes&lt;long&gt; _counts = new();
///
///     public void Add(long value) =&gt; Interlocked.Add(ref _counts[_counts.CurrentIndex], value);
///
///     public long Value
///     {
///         get
///         {
///             long sum = 0;
///             for (int i = 0; i &lt; _counts.StripeCount; i++)
///             {
///                 sum += Volatile.Read(ref _counts[i]);
///             }
///
///             return sum;
///         }
///     }
/// }
/// </code>
/// </example>
/// <typeparam name="T">What each processor keeps: a counter, a struct of counters, a cached reference.</typeparam>
public readonly struct ProcessorStripes<T>
{
    private static readonly int s_stripeCount = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(Environment.ProcessorCount, 1, 64));

    // The first and the last cell are never used: whatever the runtime's field order within a cell
    // (a reference field may be placed first), every stripe then has a padding before it and one
    // after it, from its own cell or its neighbour's.
    private readonly Cell[] _cells;
    private readonly int _mask;

    /// <summary>Creates <see cref="StripeCount"/> stripes, each holding <see langword="default"/>.</summary>
    public ProcessorStripes()
    {
        _cells = new Cell[s_stripeCount + 2];
        _mask = s_stripeCount - 1;
    }

    /// <summary>Stripes per instance, the same for every instance: the processors, rounded up to a power of two, at most 64.</summary>
    public int StripeCount => _mask + 1;

    /// <summary>
    /// The index of the stripe of the processor the calling thread runs on now, from 0 to
    /// <see cref="StripeCount"/> - 1. Read it once per unit of work (a request) and pass it to the
    /// operations of that work: they then stay on one stripe even if the thread moves.
    /// </summary>
    public int CurrentIndex => Thread.GetCurrentProcessorId() & _mask;

    /// <summary>The stripe of index <paramref name="index"/>, wrapped to <see cref="StripeCount"/> (any <see cref="int"/> is accepted and none is out of range).</summary>
    /// <param name="index">A <see cref="CurrentIndex"/> of any instance, or a loop index.</param>
    public ref T this[int index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        // Cell 1 is stripe 0; adding it apart lets the JIT fold it into the address.
        get => ref Unsafe.Add(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_cells), 1), index & _mask).Value;
    }

    // 256 bytes for a T of up to 128 (so that an index becomes an offset by a shift), the padding
    // and the T beyond that.
    [StructLayout(LayoutKind.Sequential, Size = 256)]
    private struct Cell
    {
#pragma warning disable CS0169 // Never read nor written: the padding is what keeps the stripes apart.
        private CacheLinePadding _padding;
#pragma warning restore CS0169
        public T Value;
    }
}
