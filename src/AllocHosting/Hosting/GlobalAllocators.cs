using AllocHosting.Allocators;

namespace AllocHosting;

/// <summary>The allocator each <see cref="GlobalAllocatorKind"/> stands for.</summary>
internal static class GlobalAllocators
{
    /// <summary>The native library of <paramref name="kind"/>; null for <see cref="GlobalAllocatorKind.Process"/>.</summary>
    public static NativeAllocatorLibrary? Library(GlobalAllocatorKind kind) => kind switch
    {
        GlobalAllocatorKind.Mimalloc => NativeAllocatorLibrary.Mimalloc,
        GlobalAllocatorKind.Jemalloc => NativeAllocatorLibrary.Jemalloc,
        GlobalAllocatorKind.Rpmalloc => NativeAllocatorLibrary.Rpmalloc,
        _ => null,
    };

    /// <summary>
    /// The allocator of <paramref name="kind"/>: <see cref="NativeMemoryAllocator.Shared"/> for the
    /// process allocator, <see cref="NumaHeapAllocator.Shared"/> for the NUMA heap allocator, otherwise
    /// an unchecked <see cref="ExternalNativeAllocator"/> (thread-safe, as a global allocator must be).
    /// </summary>
    /// <exception cref="DllNotFoundException">The library cannot be loaded (the options validator reports this at start-up first).</exception>
    public static IAllocator Create(GlobalAllocatorKind kind) => kind switch
    {
        GlobalAllocatorKind.NumaHeap => NumaHeapAllocator.Shared,
        _ => Library(kind) is { } library ? ExternalNativeAllocator.Load(library) : NativeMemoryAllocator.Shared,
    };
}
