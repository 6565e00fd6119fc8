namespace AllocHosting.Allocators;

/// <summary>
/// Marks a heap abandoned when its thread dies: the thread's [ThreadStatic] table holds the only
/// reference to this object, so it becomes unreachable (and is finalised) once the thread is gone.
/// </summary>
internal sealed class HeapLifetime(ThreadHeap heap)
{
    /// <summary>The heap whose thread this object outlives by one garbage collection.</summary>
    public ThreadHeap Heap { get; } = heap;

    ~HeapLifetime()
    {
        try
        {
            Heap.Abandon();
        }
#pragma warning disable CA1031 // An exception escaping a finaliser ends the process; the heap's memory then simply stays mapped.
        catch (Exception)
        {
        }
#pragma warning restore CA1031
    }
}
