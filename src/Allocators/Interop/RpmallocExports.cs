namespace AllocHosting.Allocators.Interop;

/// <summary>
/// rpmalloc's entry points: <c>rpaligned_alloc</c>, <c>rpfree</c>, <c>rpmalloc_usable_size</c> and
/// <c>rpaligned_realloc</c> (with <c>RPMALLOC_GROW_OR_FAIL</c> for growth in place), after
/// <c>rpmalloc_initialize</c> once and <c>rpmalloc_thread_initialize</c> on every thread that calls it.
/// </summary>
/// <remarks>
/// <para>
/// rpmalloc keeps a heap per thread and must be told about each thread before the thread's first
/// call: every entry point here first checks a thread-static flag and initialises the thread once.
/// Threads are never finalised (.NET gives no hook at thread exit that runs on the exiting thread),
/// so a thread that ends leaves its heap to rpmalloc, which adopts it for a later thread.
/// </para>
/// <para>
/// rpmalloc has no call that answers a usable size before a block exists, so the usable size of a
/// request is the request; a block's own size is <c>rpmalloc_usable_size</c>.
/// </para>
/// </remarks>
internal sealed unsafe class RpmallocExports : NativeAllocatorExports
{
    // rpaligned_realloc's flag: fail (return null) rather than move the block.
    private const uint GrowOrFail = 2;

    [ThreadStatic]
    private static bool t_threadInitialized;

    private readonly delegate* unmanaged<void> _threadInitialize;
    private readonly delegate* unmanaged<nuint, nuint, void*> _alignedAlloc;
    private readonly delegate* unmanaged<void*, void> _free;
    private readonly delegate* unmanaged<void*, nuint, nuint, nuint, uint, void*> _alignedRealloc;
    private readonly delegate* unmanaged<void*, nuint> _usableSize;

    /// <summary>Resolves the exports of the loaded <c>librpmalloc.so</c> and initialises rpmalloc.</summary>
    /// <exception cref="EntryPointNotFoundException">An export is missing.</exception>
    public RpmallocExports(nint handle)
    {
        var initialize = (delegate* unmanaged<int>)Export(handle, "rpmalloc_initialize");
        _threadInitialize = (delegate* unmanaged<void>)Export(handle, "rpmalloc_thread_initialize");
        _alignedAlloc = (delegate* unmanaged<nuint, nuint, void*>)Export(handle, "rpaligned_alloc");
        _free = (delegate* unmanaged<void*, void>)Export(handle, "rpfree");
        _alignedRealloc = (delegate* unmanaged<void*, nuint, nuint, nuint, uint, void*>)Export(handle, "rpaligned_realloc");
        _usableSize = (delegate* unmanaged<void*, nuint>)Export(handle, "rpmalloc_usable_size");

        // Initialises the process state and the calling thread; later calls do nothing.
        initialize();
        t_threadInitialized = true;
    }

    /// <inheritdoc />
    public override NativeAllocatorLibrary Library => NativeAllocatorLibrary.Rpmalloc;

    /// <inheritdoc />
    public override byte* Allocate(nuint size, nuint alignment)
    {
        EnsureThread();
        return (byte*)_alignedAlloc(alignment, size);
    }

    /// <inheritdoc />
    public override void Free(byte* pointer, nuint size, nuint alignment)
    {
        EnsureThread();
        _free(pointer);
    }

    /// <inheritdoc />
    public override byte* Reallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        EnsureThread();
        return (byte*)_alignedRealloc(pointer, alignment, newSize, currentSize, 0);
    }

    /// <summary><c>rpaligned_realloc</c> with <c>RPMALLOC_GROW_OR_FAIL</c>: the same block, grown, or null.</summary>
    public override bool TryGrowInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        EnsureThread();
        return _alignedRealloc(pointer, alignment, newSize, currentSize, GrowOrFail) == pointer;
    }

    /// <summary>Always true: the block keeps its memory, of which the caller now uses less.</summary>
    public override bool TryShrinkInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) => true;

    /// <summary>The request: rpmalloc answers usable sizes only for blocks.</summary>
    public override nuint UsableSize(nuint size, nuint alignment) => size;

    /// <inheritdoc />
    public override nuint BlockUsableSize(byte* pointer)
    {
        EnsureThread();
        return _usableSize(pointer);
    }

    private void EnsureThread()
    {
        if (!t_threadInitialized)
        {
            InitializeThreadSlow();
        }
    }

    private void InitializeThreadSlow()
    {
        _threadInitialize();
        t_threadInitialized = true;
    }
}
