using System.Buffers;
using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

public unsafe class MemoryPoolAllocatorTests
{
    // W-AD2: the seed's AllocToAllocatorAdaptor had a private field and no constructor, so nothing
    // outside the crate could create one. Ours is built from any MemoryPool<byte>.
    [Fact]
    public void W_AD2_can_be_constructed_from_any_memory_pool()
    {
        using var shared = new MemoryPoolAllocator(MemoryPool<byte>.Shared);
        Assert.Same(MemoryPool<byte>.Shared, shared.Pool);
        using var custom = new MemoryPoolAllocator(new TestMemoryPool());
        byte* pointer = custom.Allocate(10, 8);
        custom.Deallocate(pointer, 10, 8);
        Assert.Throws<ArgumentNullException>(() => new MemoryPoolAllocator(null!));
    }

    [Fact]
    public void Allocate_and_free_return_the_buffer_to_the_pool()
    {
        var pool = new TestMemoryPool();
        using var allocator = new MemoryPoolAllocator(pool);
        byte* pointer = allocator.Allocate(100, 1);
        new Span<byte>(pointer, 100).Fill(3);
        Assert.True(allocator.Owns(pointer));
        Assert.Equal(1, pool.Rented);
        Assert.Equal(100, allocator.Statistics.BytesInUse);

        allocator.Deallocate(pointer, 100, 1);
        Assert.Equal(1, pool.Returned);
        Assert.False(allocator.Owns(pointer));
        var statistics = allocator.Statistics;
        Assert.Equal(0, statistics.BytesInUse);
        Assert.Equal(1, statistics.AllocationCount);
        Assert.Equal(1, statistics.DeallocationCount);
        Assert.Equal(100, statistics.TotalBytesAllocated);
    }

    [Fact]
    public void Every_alignment_up_to_4096_is_honoured()
    {
        using var allocator = new MemoryPoolAllocator(MemoryPool<byte>.Shared);
        var blocks = new List<(nuint Address, nuint Size, nuint Alignment)>();
        for (nuint alignment = 1; alignment <= 4096; alignment <<= 1)
        {
            foreach (nuint size in new nuint[] { 1, 33, alignment + 5 })
            {
                byte* pointer = allocator.Allocate(size, alignment);
                Assert.True(Allocator.IsAligned((nuint)pointer, alignment), $"{size} bytes aligned to {alignment}");
                new Span<byte>(pointer, (int)size).Fill(0xCD);
                blocks.Add(((nuint)pointer, size, alignment));
            }
        }

        foreach (var (address, size, alignment) in blocks)
        {
            Assert.True(new ReadOnlySpan<byte>((void*)address, (int)size).IndexOfAnyExcept((byte)0xCD) < 0);
            allocator.Deallocate((byte*)address, size, alignment);
        }

        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Grow_keeps_contents_in_place_while_the_buffer_has_room_then_moves()
    {
        var pool = new TestMemoryPool { Rounding = 64 };
        using var allocator = new MemoryPoolAllocator(pool);
        byte* pointer = allocator.Allocate(10, 1);
        for (int i = 0; i < 10; i++)
        {
            pointer[i] = (byte)i;
        }

        // The pool rounded the 10-byte request up to a 64-byte buffer: room to grow in place.
        Assert.True(allocator.GrowingReallocate(pointer, 10, 40, 1) == pointer);
        Assert.True(allocator.TryGrowInPlace(pointer, 40, 64, 1));
        Assert.False(allocator.TryGrowInPlace(pointer, 64, 65, 1));
        Assert.Equal(1, pool.Rented);

        byte* moved = allocator.GrowingReallocate(pointer, 64, 1000, 1);
        Assert.True(moved != pointer);
        Assert.False(allocator.Owns(pointer));
        for (int i = 0; i < 10; i++)
        {
            Assert.Equal((byte)i, moved[i]);
        }

        Assert.Equal(1000, allocator.Statistics.BytesInUse);
        Assert.Equal(2, pool.Rented);
        Assert.Equal(1, pool.Returned);
        allocator.Deallocate(moved, 1000, 1);
    }

    [Fact]
    public void Shrink_is_in_place_and_keeps_contents()
    {
        using var allocator = new MemoryPoolAllocator(MemoryPool<byte>.Shared);
        byte* pointer = allocator.Allocate(500, 32);
        new Span<byte>(pointer, 500).Fill(9);
        byte* shrunk = allocator.ShrinkingReallocate(pointer, 500, 20, 32);
        Assert.True(shrunk == pointer);
        Assert.True(new ReadOnlySpan<byte>(shrunk, 20).IndexOfAnyExcept((byte)9) < 0);
        Assert.Equal(20, allocator.Statistics.BytesInUse);
        allocator.Deallocate(shrunk, 20, 32);
    }

    [Fact]
    public void AllocateZeroed_clears_exactly_the_requested_bytes()
    {
        var pool = new TestMemoryPool { Rounding = 64, InitialByte = 0xFF };
        using var allocator = new MemoryPoolAllocator(pool);
        byte* pointer = allocator.AllocateZeroed(10, 1);
        Assert.True(new ReadOnlySpan<byte>(pointer, 10).IndexOfAnyExcept((byte)0) < 0);
        byte[] buffer = pool.LastArray!;
        Assert.Equal(10, buffer.AsSpan().IndexOf((byte)0xFF));
        Assert.True(buffer.AsSpan(10).IndexOfAnyExcept((byte)0xFF) < 0);
        allocator.Deallocate(pointer, 10, 1);
    }

    [Fact]
    public void Free_of_foreign_pointer_throws_and_changes_nothing()
    {
        var pool = new TestMemoryPool();
        using var allocator = new MemoryPoolAllocator(pool);
        byte* mine = allocator.Allocate(64, 8);
        byte* foreign = stackalloc byte[64];
        var before = allocator.Statistics;

        Assert.Throws<ArgumentException>(() => allocator.Deallocate(foreign, 64, 8));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(mine + 8, 56, 8));
        Assert.Throws<ArgumentException>(() => allocator.GrowingReallocate(foreign, 64, 128, 8));
        Assert.Throws<ArgumentException>(() => allocator.ShrinkingReallocate(foreign, 64, 32, 8));

        Assert.Equal(before, allocator.Statistics);
        Assert.Equal(0, pool.Returned);
        Assert.True(allocator.Owns(mine));
        Assert.False(allocator.Owns(foreign));
        allocator.Deallocate(mine, 64, 8);
    }

    [Fact]
    public void Double_free_throws_and_changes_nothing()
    {
        var pool = new TestMemoryPool();
        using var allocator = new MemoryPoolAllocator(pool);
        byte* pointer = allocator.Allocate(64, 8);
        allocator.Deallocate(pointer, 64, 8);
        var before = allocator.Statistics;
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 64, 8));
        Assert.Equal(before, allocator.Statistics);
        Assert.Equal(1, pool.Returned);
    }

    [Fact]
    public void Free_with_another_size_or_alignment_throws_and_changes_nothing()
    {
        using var allocator = new MemoryPoolAllocator(MemoryPool<byte>.Shared);
        byte* pointer = allocator.Allocate(64, 16);
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 63, 16));
        Assert.Throws<ArgumentException>(() => allocator.Deallocate(pointer, 64, 32));
        Assert.True(allocator.Owns(pointer));
        allocator.Deallocate(pointer, 64, 16);
    }

    [Fact]
    public void Requests_larger_than_one_pool_buffer_are_exhaustion()
    {
        var pool = new TestMemoryPool { MaxSize = 1000 };
        using var allocator = new MemoryPoolAllocator(pool);
        Assert.True(allocator.TryAllocate(1000, 1, out byte* fits));
        allocator.Deallocate(fits, 1000, 1);

        // 1000 bytes aligned to 2 need 1001 bytes of buffer, more than the pool's maximum.
        Assert.False(allocator.TryAllocate(1000, 2, out byte* refused));
        Assert.True(refused == null);
        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate((nuint)int.MaxValue + 1, 1));
        Assert.Equal(1, pool.Rented);
        Assert.Equal(2, allocator.Statistics.FailureCount);
    }

    [Fact]
    public void OutOfMemory_from_the_pool_is_exhaustion_and_a_failed_grow_keeps_the_block()
    {
        var pool = new TestMemoryPool();
        using var allocator = new MemoryPoolAllocator(pool);
        byte* pointer = allocator.Allocate(64, 8);
        new Span<byte>(pointer, 64).Fill(4);
        pool.Exhausted = true;

        Assert.Throws<AllocatorExhaustedException>(() => allocator.Allocate(64, 8));
        Assert.False(allocator.TryGrowingReallocate(pointer, 64, 4096, 8, out _));
        Assert.True(allocator.Owns(pointer));
        Assert.True(new ReadOnlySpan<byte>(pointer, 64).IndexOfAnyExcept((byte)4) < 0);
        pool.Exhausted = false;
        allocator.Deallocate(pointer, 64, 8);
    }

    [Fact]
    public void A_pool_returning_short_buffers_is_reported()
    {
        var pool = new TestMemoryPool { Rounding = 1, ShortBy = 1 };
        using var allocator = new MemoryPoolAllocator(pool);
        Assert.Throws<InvalidOperationException>(() => allocator.Allocate(100, 1));
        Assert.Equal(1, pool.Returned);
        Assert.Equal(0, allocator.Statistics.AllocationCount);
    }

    [Fact]
    public void Dispose_returns_every_outstanding_buffer_and_ends_the_allocator()
    {
        var pool = new TestMemoryPool();
        var allocator = new MemoryPoolAllocator(pool);
        byte* a = allocator.Allocate(10, 1);
        _ = allocator.Allocate(20, 64);
        allocator.Dispose();
        allocator.Dispose();

        Assert.Equal(2, pool.Returned);
        Assert.False(allocator.Owns(a));
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        Assert.Throws<ObjectDisposedException>(() => allocator.Allocate(8, 8));
        Assert.Throws<ObjectDisposedException>(() => allocator.Deallocate(a, 10, 1));
    }

    [Fact]
    public void Concurrent_use_keeps_the_table_and_counters_consistent()
    {
        using var allocator = new MemoryPoolAllocator(MemoryPool<byte>.Shared);
        Parallel.For(0, 4, worker =>
        {
            var random = new Random(worker);
            for (int i = 0; i < 300; i++)
            {
                nuint size = (nuint)random.Next(1, 2000);
                nuint alignment = (nuint)1 << random.Next(0, 8);
                byte* pointer = allocator.Allocate(size, alignment);
                new Span<byte>(pointer, (int)size).Fill((byte)worker);
                byte* grown = allocator.GrowingReallocate(pointer, size, size + 3000, alignment);
                Assert.True(new ReadOnlySpan<byte>(grown, (int)size).IndexOfAnyExcept((byte)worker) < 0);
                allocator.Deallocate(grown, size + 3000, alignment);
            }
        });

        var statistics = allocator.Statistics;
        Assert.Equal(0, statistics.BytesInUse);
        Assert.Equal(statistics.AllocationCount, statistics.DeallocationCount);
        Assert.InRange(statistics.AllocationCount, 1200, 2400);
    }

    // Model: AllocatorModel's list of live blocks (aligned, owned, disjoint, contents intact) over
    // MemoryPool<byte>.Shared, with alignments up to 4096.
    [Fact]
    public void Behaves_like_the_reference_model()
    {
        var settings = new ModelSettings { MaxSize = 5000, MaxAlignmentLog2 = 12, Iterations = 100 };
        long steps = AllocatorModel.Run(
            settings,
            () => new MemoryPoolAllocator(MemoryPool<byte>.Shared),
            afterAllFreed: allocator =>
            {
                var statistics = allocator.Statistics;
                Assert.Equal(0, statistics.BytesInUse);
                Assert.Equal(statistics.AllocationCount, statistics.DeallocationCount);
            });
        Assert.True(steps >= 3000, $"only {steps} steps ran");
    }
}
