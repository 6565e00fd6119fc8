using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Tests;

public unsafe class RetirableMemoryManagerTests
{
    [Fact]
    public void Retire_ends_the_life_once_and_every_Memory_taken_throws_without_freeing()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* block = allocator.Allocate(64, 8);
        var manager = new NativeMemoryManager(allocator, block, 64, 8);
        Memory<byte> memory = manager.Memory;

        Assert.True(manager.Retire());
        Assert.False(manager.Retire());
        Assert.True(manager.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => memory.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => manager.GetSpan().Length);
        Assert.Throws<ObjectDisposedException>(() => manager.Pin());

        // The life ended without the free, so the dispose that would free does nothing.
        ((IDisposable)manager).Dispose();
        Assert.True(allocator.Owns(block));
        Assert.Equal(0, allocator.Statistics.DeallocationCount);
        allocator.Deallocate(block, 64, 8);
    }

    [Fact]
    public void Retire_after_Dispose_returns_false()
    {
        using var allocator = new NativeMemoryAllocator();
        var manager = new NativeMemoryManager(allocator, allocator.Allocate(64, 8), 64, 8);
        ((IDisposable)manager).Dispose();
        Assert.False(manager.Retire());
    }

    [Fact]
    public void Arena_chunk_manager_covers_its_elements_until_disposed_and_names_the_arena()
    {
        int* elements = (int*)NativeMemory.Alloc(16 * sizeof(int));
        try
        {
            var manager = new ArenaChunkMemoryManager<int>(null, elements, 16);
            Memory<int> memory = manager.Memory;
            memory.Span[15] = 7;

            Assert.Equal(16, manager.Length);
            Assert.Equal(7, elements[15]);
            Assert.Throws<ArgumentOutOfRangeException>(() => manager.Pin(17));

            ((IDisposable)manager).Dispose();

            Assert.True(manager.IsDisposed);
            Assert.False(manager.Retire());
            var error = Assert.Throws<ObjectDisposedException>(() => memory.Span.Length);
            Assert.Equal(nameof(ArenaChunk), error.ObjectName);
        }
        finally
        {
            NativeMemory.Free(elements);
        }
    }
}
