using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// The lock of one <see cref="NumaHeapAllocator"/> heap, as DPDK's <c>rte_spinlock</c> guards a
/// <c>malloc_heap</c>: one compare-and-swap to take it when free, a plain release store to give it
/// back. A thread that finds it taken spins a bounded number of times (<see cref="SpinWait"/>, which
/// backs off with pause instructions) and then yields its processor between attempts, so that a
/// holder preempted on a busy machine gets to run instead of being spun against.
/// </summary>
/// <remarks>
/// Not reentrant, no owner recorded, no fairness. Critical sections are a few list operations
/// (a segment mapping at worst), so the holder is nearly always running and the spin is short.
/// Embedded as a field of its heap; never copy it.
/// </remarks>
internal struct NumaHeapSpinLock
{
    /// <summary>Spins (with back-off) before the waiter starts yielding its processor.</summary>
    public const int SpinLimit = 10;

    private int _taken;
    private long _contended;

    /// <summary>Times a thread found the lock taken (diagnostics: how contended the heap is).</summary>
    public readonly long ContentionCount => Volatile.Read(in _contended);

    /// <summary>Whether some thread holds the lock now (for tests and assertions).</summary>
    public readonly bool IsHeld => Volatile.Read(in _taken) != 0;

    /// <summary>Takes the lock, waiting as long as needed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Enter()
    {
        if (Interlocked.CompareExchange(ref _taken, 1, 0) != 0)
        {
            EnterSlow();
        }
    }

    /// <summary>Takes the lock when it is free now, without waiting.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryEnter() => Interlocked.CompareExchange(ref _taken, 1, 0) == 0;

    /// <summary>Releases the lock; the caller must hold it. The store publishes everything written under the lock.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Exit() => Volatile.Write(ref _taken, 0);

    // Bounded spinning, then yielding: read before each attempt so that waiters do not bounce the
    // line with failed compare-and-swaps while the holder works.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void EnterSlow()
    {
        Interlocked.Increment(ref _contended);
        var spinner = default(SpinWait);
        int spins = 0;
        while (true)
        {
            if (Volatile.Read(ref _taken) == 0 && Interlocked.CompareExchange(ref _taken, 1, 0) == 0)
            {
                return;
            }

            if (spins < SpinLimit)
            {
                spinner.SpinOnce(sleep1Threshold: -1);
                spins++;
            }
            else
            {
                Thread.Yield();
            }
        }
    }
}
