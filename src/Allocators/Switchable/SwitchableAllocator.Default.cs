namespace AllocHosting.Allocators;

// The process-wide instance that code without an allocator of its own uses (NativeList<T>'s
// parameterless constructors), and that AddSwitchableAllocators registers when the global allocator
// is the process allocator, so that such code allocates from a request's arena inside a request.
//
// Threading: created once, on first use, by whichever thread gets there first (a lost race only
// drops an unused instance, which owns nothing).
public sealed unsafe partial class SwitchableAllocator
{
    private static SwitchableAllocator? s_default;

    /// <summary>
    /// The process-wide switchable allocator: global mode served by
    /// <see cref="NativeMemoryAllocator.Shared"/>, thread-local mode by
    /// <see cref="ThreadLocalAllocator.Shared"/>, and whatever context allocator each async flow
    /// installs in it. Created on first use; never disposed (its <see cref="AllocatorBase.Dispose()"/>
    /// does nothing, like every instance's).
    /// </summary>
    /// <remarks>
    /// Code that takes no allocator uses it (<see cref="NativeList{T}()"/>). <c>AddSwitchableAllocators</c>
    /// registers this instance as the application's <see cref="SwitchableAllocator"/> when its global
    /// allocator is the process allocator (the default), so that with <c>InstallContextAllocator</c> on
    /// such code allocates from the request's arena. With a library as the global allocator it
    /// registers an instance of its own (pass it explicitly for that global allocator) and installs
    /// each request's arena in both, so inside a request such code still allocates from the arena;
    /// outside one, this instance's global allocator is still the process allocator.
    /// </remarks>
    public static SwitchableAllocator Default
    {
        get
        {
            SwitchableAllocator? instance = Volatile.Read(ref s_default);
            if (instance is not null)
            {
                return instance;
            }

            Interlocked.CompareExchange(ref s_default, new SwitchableAllocator(), null);
            return s_default;
        }
    }
}
