using System.Buffers;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators.Tests;

public unsafe class NativeMemoryManagerTests
{
    [Fact]
    public void Exposes_the_block_as_memory_and_span()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* block = allocator.Allocate(300, 32);
        using var manager = new NativeMemoryManager(allocator, block, 300, 32);

        Assert.Equal(300, manager.Length);
        Assert.Equal(300, manager.Memory.Length);
        Span<byte> span = manager.GetSpan();
        Assert.Equal(300, span.Length);
        fixed (byte* start = span)
        {
            Assert.True(start == block);
        }

        manager.Memory.Span.Fill(7);
        Assert.Equal(7, block[299]);
        Assert.False(manager.IsDisposed);
        Assert.False(MemoryMarshal.TryGetArray<byte>(manager.Memory, out _));
    }

    [Fact]
    public void Dispose_frees_the_block_exactly_once()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        byte* block = allocator.Allocate(300, 32);
        IMemoryOwner<byte> manager = new NativeMemoryManager(allocator, block, 300, 32);
        manager.Dispose();
        Assert.False(allocator.Owns(block));
        manager.Dispose();
        Assert.Equal(1, allocator.Statistics.DeallocationCount);
        Assert.True(((NativeMemoryManager)manager).IsDisposed);
    }

    [Fact]
    public void Concurrent_Dispose_frees_the_block_exactly_once()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        for (int round = 0; round < 50; round++)
        {
            IMemoryOwner<byte> manager = new NativeMemoryManager(allocator, allocator.Allocate(16, 16), 16, 16);
            using var start = new Barrier(4);
            Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
            {
                start.SignalAndWait(TimeSpan.FromSeconds(5));
                manager.Dispose();
            });
        }

        Assert.Equal(50, allocator.Statistics.DeallocationCount);
    }

    [Fact]
    public void Use_after_Dispose_throws_ObjectDisposedException()
    {
        using var allocator = new NativeMemoryAllocator();
        var manager = new NativeMemoryManager(allocator, allocator.Allocate(64, 8), 64, 8);
        Memory<byte> memory = manager.Memory;
        ((IDisposable)manager).Dispose();

        Assert.Throws<ObjectDisposedException>(() => manager.GetSpan().Length);
        Assert.Throws<ObjectDisposedException>(() => manager.Pin());
        Assert.Throws<ObjectDisposedException>(() => manager.Memory);
        Assert.Throws<ObjectDisposedException>(() => memory.Span.Length);
        Assert.Throws<ObjectDisposedException>(() => memory.Pin());
    }

    [Fact]
    public void Pin_validates_the_index_and_points_into_the_block()
    {
        using var allocator = new NativeMemoryAllocator();
        byte* block = allocator.Allocate(64, 8);
        using var manager = new NativeMemoryManager(allocator, block, 64, 8);

        using (var handle = manager.Pin(10))
        {
            Assert.True(handle.Pointer == block + 10);
        }

        using (var end = manager.Pin(64))
        {
            Assert.True(end.Pointer == block + 64);
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => manager.Pin(65));
        Assert.Throws<ArgumentOutOfRangeException>(() => manager.Pin(-1));
        manager.Unpin();
    }

    [Fact]
    public void Constructor_rejects_bad_arguments()
    {
        using var allocator = new NativeMemoryAllocator();
        byte* block = allocator.Allocate(64, 64);
        Assert.Throws<ArgumentNullException>(() => new NativeMemoryManager(null!, block, 64, 64));
        Assert.Throws<ArgumentNullException>(() => new NativeMemoryManager(allocator, null, 64, 64));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeMemoryManager(allocator, block, -1, 64));
        Assert.Throws<ArgumentException>(() => new NativeMemoryManager(allocator, block, 64, 3));
        Assert.Throws<ArgumentException>(() => new NativeMemoryManager(allocator, block + 1, 63, 64));
        allocator.Deallocate(block, 64, 64);
    }

    [Fact]
    public void Empty_manager_over_the_sentinel_frees_nothing()
    {
        using var allocator = new NativeMemoryAllocator(trackOwnership: true);
        var manager = new NativeMemoryManager(allocator, Allocator.ZeroSizeSentinel, 0, 16);
        Assert.True(manager.Memory.IsEmpty);
        ((IDisposable)manager).Dispose();
        Assert.Equal(default, allocator.Statistics);
    }
}
