using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>A grow the kernel refuses leaves the original block live, owned and freeable.</summary>
public unsafe class MemoryMapAllocatorFailedGrowTests
{
    private const int ENOMEM = 12;

    public static TheoryData<uint, bool> Cases => new()
    {
        { 8u, false },
        { 8u, true },
        { 1u << 21, false },
        { 1u << 21, true },
    };

    [LinuxTheory]
    [MemberData(nameof(Cases))]
    public void A_refused_grow_keeps_the_block_live_owned_and_freeable(uint alignment, bool registerBlocks)
    {
        var calls = new FakeLinuxSystemCalls();
        var source = new MemoryMapSource(null, calls);
        using var allocator = new MemoryMapAllocator(source, registerBlocks);
        byte* block = allocator.Allocate(4096, alignment);
        block[0] = 7;
        long mapped = source.MappedBytes;

        calls.Refuse = static _ => ENOMEM;   // mmap, mremap (moving and in place): all refused
        Assert.Throws<AllocatorExhaustedException>(() => allocator.GrowingReallocate(block, 4096, 1 << 22, alignment));
        Assert.False(allocator.TryGrowingReallocate(block, 4096, 1 << 22, alignment, out _));
        Assert.False(allocator.TryGrowInPlace(block, 4096, 1 << 22, alignment));
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Reallocate(block, 4096, 1 << 22, alignment));
        calls.Refuse = null;

        Assert.Equal(1, allocator.LiveBlockCount);
        Assert.True(allocator.Owns(block));
        Assert.Equal(7, block[0]);
        Assert.Equal(mapped, source.MappedBytes);
        block = allocator.GrowingReallocate(block, 4096, 8192, alignment);   // still usable
        allocator.Deallocate(block, 8192, alignment);
        Assert.Equal(0, allocator.LiveBlockCount);
        Assert.False(allocator.Owns(block));
    }

    [LinuxFact]
    public void A_grow_to_a_size_no_mapping_can_hold_keeps_the_block_live_owned_and_freeable()
    {
        using var allocator = new MemoryMapAllocator();
        byte* block = allocator.Allocate(4096, 8);
        foreach (nuint size in (nuint[])[Allocator.MaximumSize, Allocator.MaximumSize - 4096, Allocator.MaximumSize - Allocator.MaximumAlignment])
        {
            Exception? error = Record.Exception(() => allocator.GrowingReallocate(block, 4096, size, 8));
            Assert.Equal(1, allocator.LiveBlockCount);   // the block is still known, whatever was thrown
            Assert.True(allocator.Owns(block));
            Assert.IsType<AllocatorExhaustedException>(error);
        }

        allocator.Deallocate(block, 4096, 8);
        Assert.Equal(0, allocator.LiveBlockCount);
    }
}
