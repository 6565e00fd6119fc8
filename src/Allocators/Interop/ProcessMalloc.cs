using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Interop;

/// <summary>
/// The process's own <c>malloc</c>, called through an unmanaged function pointer so that a failure
/// is a null return and not an exception: the allocation fast path of
/// <see cref="NativeMemoryAllocator"/> then needs no <see langword="try"/> block.
/// </summary>
/// <remarks>
/// <para>
/// Why: <see cref="NativeMemory.Alloc(nuint)"/> throws <see cref="OutOfMemoryException"/> when
/// <c>malloc</c> returns null, and the allocator contract wants null. Catching it puts the call in a
/// method with an exception handler, which the JIT does not inline; that method then sets up its own
/// P/Invoke frame on every call, which cost about 8 ns per allocation on the 2-vCPU machine (issue 12).
/// </para>
/// <para>
/// Which <c>malloc</c>: the symbol resolved in the process's global scope (the main program handle),
/// exactly as the runtime's own <c>SystemNative_Malloc</c> resolves it, so a <c>malloc</c>
/// interposed with <c>LD_PRELOAD</c> is the one called, and a block from here may be freed and
/// resized with <see cref="NativeMemory.Free"/> and <see cref="NativeMemory.Realloc"/>. Where the
/// main program exports no <c>malloc</c> (Windows), <see cref="IsAvailable"/> is false and the caller
/// uses <see cref="NativeMemory.Alloc(nuint)"/>. The call keeps the GC transition: <c>malloc</c> may
/// take a lock or map memory.
/// </para>
/// </remarks>
internal static unsafe class ProcessMalloc
{
    private static readonly delegate* unmanaged<nuint, void*> s_malloc = Resolve();

    /// <summary>Whether <see cref="Malloc"/> may be called (the process exports <c>malloc</c>).</summary>
    public static bool IsAvailable => s_malloc != null;

    /// <summary><c>malloc(size)</c>: null when the C runtime has no memory. Only when <see cref="IsAvailable"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void* Malloc(nuint size) => s_malloc(size);

    private static delegate* unmanaged<nuint, void*> Resolve()
    {
        if (OperatingSystem.IsWindows())
        {
            return null;
        }

        return NativeLibrary.TryGetExport(NativeLibrary.GetMainProgramHandle(), "malloc", out nint address)
            ? (delegate* unmanaged<nuint, void*>)address
            : null;
    }
}
