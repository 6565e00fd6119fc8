using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting;

/// <summary>
/// A counter added to by many threads at once: one padded cell per processor slot (the same slots as
/// <see cref="ProcessorSlots{T}"/>), summed when read, so that adds from different cores do not
/// bounce one cache line.
/// </summary>
internal sealed class ProcessorCounter
{
    private readonly ProcessorCell[] _cells;
    private readonly int _mask;

    public ProcessorCounter()
    {
        _cells = new ProcessorCell[ProcessorSlots<object>.SlotCount];
        _mask = _cells.Length - 1;
    }

    /// <summary>The sum of every add so far (a snapshot while adds run).</summary>
    public long Value
    {
        get
        {
            long sum = 0;
            for (int i = 0; i < _cells.Length; i++)
            {
                sum += Volatile.Read(ref _cells[i].Value);
            }

            return sum;
        }
    }

    /// <summary>Adds <paramref name="value"/> in the cell of slot <paramref name="index"/> (a <see cref="ProcessorSlots{T}.CurrentIndex"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int index, long value) =>
        Interlocked.Add(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_cells), index & _mask).Value, value);
}
