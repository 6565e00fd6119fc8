using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>Blocks of a <see cref="SwitchableAllocator"/> handled by address (tests that await cannot hold pointers), and the context allocator most tests install.</summary>
internal static unsafe class SwitchableBlocks
{
    public const nuint ContextCapacity = 64 * 1024;

    public static ContextAllocator NewContext(nuint capacity = ContextCapacity) =>
        ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, capacity));

    public static nuint Allocate(SwitchableAllocator allocator, nuint size, nuint alignment = 8) =>
        (nuint)allocator.Allocate(size, alignment);

    public static void Free(SwitchableAllocator allocator, nuint address, nuint size, nuint alignment = 8) =>
        allocator.Deallocate((byte*)address, size, alignment);

    public static bool Owns(SwitchableAllocator allocator, nuint address) => allocator.Owns((byte*)address);
}
