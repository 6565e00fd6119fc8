using AllocHosting.Allocators.MemorySources;
using CsCheck;

namespace AllocHosting.Allocators.Tests;

public unsafe class ArenaMemorySourceTests
{
    private const nuint SlotSize = 256;
    private const int SlotCount = 8;

    private static ArenaMemorySource Create(int slotCount = SlotCount) => new(NativeMemorySource.Shared, SlotSize, slotCount);

    [Theory]
    [InlineData(1u, 8u, 8u)]
    [InlineData(8u, 8u, 8u)]
    [InlineData(12u, 16u, 16u)]
    [InlineData(33u, 64u, 64u)]
    [InlineData(64u, 64u, 64u)]
    [InlineData(65u, 128u, 128u)]
    [InlineData(100u, 128u, 128u)]
    [InlineData(200u, 256u, 256u)]
    [InlineData(4096u, 4096u, 4096u)]
    [InlineData(4100u, 4160u, 64u)]
    [InlineData(65536u, 65536u, 4096u)]
    public void Slot_size_is_rounded_and_every_slot_is_aligned_to_the_granularity(uint requested, uint expectedSize, uint expectedAlignment)
    {
        using var arena = new ArenaMemorySource(NativeMemorySource.Shared, requested, 3);

        Assert.Equal((nuint)expectedSize, arena.SlotSize);
        Assert.Equal((nuint)expectedAlignment, arena.Granularity);
        Assert.Equal(arena.SlotSize * 3, arena.Range.Length);
        for (int i = 0; i < 3; i++)
        {
            Assert.True(Allocator.IsAligned((nuint)arena.Obtain(arena.SlotSize), arena.Granularity));
        }
    }

    [Fact]
    public void Granularity_is_capped_by_the_backing_source()
    {
        using var arena = new ArenaMemorySource(new NativeMemorySource(64), 4096, 2);

        Assert.Equal((nuint)64, arena.Granularity);
    }

    [Fact]
    public void Release_then_obtain_returns_the_same_slot()
    {
        using var arena = Create();
        byte* first = arena.Obtain(SlotSize);
        byte* second = arena.Obtain(1);

        arena.Release(first, SlotSize);
        Assert.True(arena.Obtain(SlotSize) == first);

        arena.Release(first, SlotSize);
        arena.Release(second, 1);
        Assert.True(arena.Obtain(SlotSize) == second, "last in, first out");
        Assert.True(arena.Obtain(SlotSize) == first);
    }

    [Fact]
    public void Every_slot_is_handed_out_once_then_the_arena_is_exhausted()
    {
        using var arena = Create();
        var slots = new HashSet<nuint>();
        for (int i = 0; i < SlotCount; i++)
        {
            nuint slot = (nuint)arena.Obtain(SlotSize);
            Assert.True(arena.Range.Contains(slot, SlotSize));
            Assert.True((slot - arena.Range.From) % SlotSize == 0);
            Assert.True(slots.Add(slot));
        }

        Assert.Equal(0, arena.FreeSlotCount);
        Assert.False(arena.TryObtain(1, out byte* none));
        Assert.True(none == null);
        var error = Assert.Throws<MemorySourceExhaustedException>(() => arena.Obtain(1));
        Assert.Equal(nameof(ArenaMemorySource), error.SourceName);

        foreach (nuint slot in slots)
        {
            arena.Release((byte*)slot, SlotSize);
        }

        Assert.Equal(SlotCount, arena.FreeSlotCount);
    }

    [Fact]
    public void Initializer_runs_once_per_slot_before_the_slot_is_linked()
    {
        var seen = new List<nuint>();
        using var arena = new ArenaMemorySource(NativeMemorySource.Shared, SlotSize, SlotCount, (slot, size) =>
        {
            seen.Add((nuint)slot);
            new Span<byte>(slot, (int)size).Fill(0xC3);
        });

        Assert.Equal(SlotCount, seen.Count);
        Assert.Equal(SlotCount, seen.Distinct().Count());
        Assert.All(seen, slot => Assert.True((slot - arena.Range.From) % SlotSize == 0));
        for (int i = 0; i < SlotCount; i++)
        {
            byte* slot = arena.Obtain(SlotSize);
            Assert.True(new ReadOnlySpan<byte>(slot + 8, (int)SlotSize - 8).IndexOfAnyExcept((byte)0xC3) < 0, "only the link word is overwritten");
        }

        Assert.Equal(SlotCount, seen.Count);
    }

    [Fact]
    public void Request_larger_than_a_slot_or_of_zero_bytes_throws()
    {
        using var arena = Create();

        Assert.Throws<ArgumentOutOfRangeException>(() => arena.Obtain(SlotSize + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.TryObtain(0, out _));
        Assert.Equal(SlotCount, arena.FreeSlotCount);
    }

    [Fact]
    public void Double_release_throws_and_changes_nothing()
    {
        using var arena = Create();
        byte* first = arena.Obtain(SlotSize);
        byte* second = arena.Obtain(SlotSize);
        arena.Release(first, SlotSize);

        var error = Assert.Throws<ArgumentException>(() => arena.Release(first, SlotSize));
        Assert.Contains("double release", error.Message, StringComparison.Ordinal);

        Assert.Equal(SlotCount - 1, arena.FreeSlotCount);
        Assert.True(arena.Obtain(SlotSize) == first);
        Assert.True(arena.Obtain(SlotSize) != second);
    }

    [Fact]
    public void Release_of_foreign_or_misaligned_pointer_throws_and_changes_nothing()
    {
        using var arena = Create();
        byte* slot = arena.Obtain(SlotSize);
        byte* foreign = (byte*)arena.Range.To;

        Assert.Throws<ArgumentException>(() => arena.Release(foreign, SlotSize));
        Assert.Throws<ArgumentException>(() => arena.Release((byte*)arena.Range.From - SlotSize, SlotSize));
        Assert.Throws<ArgumentException>(() => arena.Release(slot + 8, SlotSize));
        Assert.Throws<ArgumentNullException>(() => arena.Release(null, SlotSize));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.Release(slot, SlotSize + 1));

        Assert.Equal(SlotCount - 1, arena.FreeSlotCount);
        arena.Release(slot, SlotSize);
        Assert.True(arena.Obtain(SlotSize) == slot);
    }

    [Fact]
    public void Owns_tests_the_region()
    {
        using var arena = Create();

        Assert.True(arena.Owns((byte*)arena.Range.From));
        Assert.True(arena.Owns((byte*)arena.Range.To - 1));
        Assert.False(arena.Owns((byte*)arena.Range.To));
        Assert.False(arena.Owns((byte*)arena.Range.From - 1));
        Assert.Equal(SlotSize * SlotCount, arena.Range.Length);
        Assert.Equal(SlotCount, arena.SlotCount);
    }

    [Fact]
    public void Constructor_rejects_bad_arguments()
    {
        Assert.Throws<ArgumentNullException>(() => new ArenaMemorySource(null!, 64, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ArenaMemorySource(NativeMemorySource.Shared, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ArenaMemorySource(NativeMemorySource.Shared, 64, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ArenaMemorySource(NativeMemorySource.Shared, Allocator.MaximumSize, 2));
    }

    [Fact]
    public void Backing_source_with_granularity_below_8_is_rejected() =>
        Assert.Throws<ArgumentException>(() => new ArenaMemorySource(new TinyGranularitySource(), 64, 1));

    [Fact]
    public void Failing_initializer_gives_the_region_back()
    {
        var backing = new NativeMemorySource();

        Assert.Throws<InvalidOperationException>(() => new ArenaMemorySource(backing, 64, 4, (_, _) => throw new InvalidOperationException("boom")));

        Assert.Equal(0, backing.BytesObtained);
    }

    [Fact]
    public void Dispose_releases_the_region_when_no_slot_is_out()
    {
        var backing = new NativeMemorySource();
        var arena = new ArenaMemorySource(backing, SlotSize, SlotCount);
        Assert.Equal(4096, backing.BytesObtained);

        arena.Dispose();
        arena.Dispose();

        Assert.Equal(0, backing.BytesObtained);
        Assert.Throws<ObjectDisposedException>(() => arena.Obtain(SlotSize));
    }

    [Fact]
    public void Dispose_with_slots_out_gives_the_region_back_when_the_last_slot_returns()
    {
        var backing = new NativeMemorySource();
        var arena = new ArenaMemorySource(backing, SlotSize, SlotCount);
        byte* first = arena.Obtain(SlotSize);
        byte* second = arena.Obtain(SlotSize);

        arena.Dispose();
        Assert.Equal(4096, backing.BytesObtained);
        Assert.Throws<ObjectDisposedException>(() => arena.TryObtain(SlotSize, out _));
        new Span<byte>(first, (int)SlotSize).Fill(7); // still valid

        arena.Release(first, SlotSize);
        Assert.Equal(4096, backing.BytesObtained);
        arena.Release(second, SlotSize);
        Assert.Equal(0, backing.BytesObtained);
        Assert.Throws<ArgumentException>(() => arena.Release(second, SlotSize));
    }

    [Fact]
    public void Bump_allocator_runs_over_an_arena_slot()
    {
        using var arena = Create();

        byte* slot = arena.Obtain(arena.SlotSize);
        using (var borrowed = new BumpAllocator(slot, arena.SlotSize))
        {
            Assert.True(borrowed.Allocate(SlotSize / 2, 8) == slot);
            Assert.True(borrowed.TryAllocate(SlotSize / 2, 8, out _));
            Assert.False(borrowed.TryAllocate(1, 1, out _));
            borrowed.Reset();
            Assert.True(borrowed.Allocate(SlotSize, 1) == slot);
        }

        Assert.Equal(SlotCount - 1, arena.FreeSlotCount);
        arena.Release(slot, arena.SlotSize);

        using (var owning = new BumpAllocator(arena, SlotSize))
        {
            Assert.True(owning.Range.From == (nuint)slot, "the slot released last comes back first");
            Assert.Equal(SlotCount - 1, arena.FreeSlotCount);
        }

        Assert.Equal(SlotCount, arena.FreeSlotCount);
    }

    [Fact]
    public void Concurrent_obtain_and_release_never_hand_one_slot_to_two_owners()
    {
        const int threads = 4;
        const int slotCount = 6;
        using var arena = new ArenaMemorySource(NativeMemorySource.Shared, 64, slotCount);
        using var start = new Barrier(threads);
        var failures = new Exception?[threads];
        long exhausted = 0;

        var workers = Enumerable.Range(0, threads).Select(id => new Thread(() =>
        {
            try
            {
                var held = new List<nuint>();
                var random = new Random(id);
                start.SignalAndWait();
                for (int iteration = 0; iteration < 20_000; iteration++)
                {
                    if (held.Count < 2 && random.Next(2) == 0)
                    {
                        if (!arena.TryObtain(64, out byte* slot))
                        {
                            Interlocked.Increment(ref exhausted);
                            continue;
                        }

                        long owner = ((long)id << 32) | (uint)iteration;
                        ((long*)slot)[0] = owner;
                        ((long*)slot)[7] = owner;
                        held.Add((nuint)slot);
                    }
                    else if (held.Count > 0)
                    {
                        int pick = random.Next(held.Count);
                        long* slot = (long*)held[pick];
                        Assert.Equal(slot[0], slot[7]);
                        Assert.Equal(id, (int)(slot[0] >> 32));
                        held.RemoveAt(pick);
                        arena.Release((byte*)slot, 64);
                    }
                }

                foreach (nuint slot in held)
                {
                    Assert.Equal(id, (int)(((long*)slot)[7] >> 32));
                    arena.Release((byte*)slot, 64);
                }
            }
            catch (Exception error)
            {
                failures[id] = error;
            }
        })).ToArray();
        foreach (var worker in workers)
        {
            worker.Start();
        }

        foreach (var worker in workers)
        {
            worker.Join();
        }

        Assert.All(failures, Assert.Null);
        Assert.Equal(slotCount, arena.FreeSlotCount);
        var slots = new HashSet<nuint>();
        for (int i = 0; i < slotCount; i++)
        {
            Assert.True(slots.Add((nuint)arena.Obtain(64)), "the free list holds every slot exactly once");
        }

        Assert.False(arena.TryObtain(64, out _));
    }

    private sealed class TinyGranularitySource : IMemorySource
    {
        public nuint Granularity => 4;

        public byte* Obtain(nuint size) => throw new NotSupportedException();

        public bool TryObtain(nuint size, out byte* region) => throw new NotSupportedException();

        public void Release(byte* region, nuint size) => throw new NotSupportedException();
    }

    private enum ArenaOperation
    {
        Obtain,
        Release,
        ReleaseFree,
        ReleaseMisaligned,
    }

    // Model: the free list is a stack of slot indexes (slot 0 on top at the start). Obtain must
    // pop the model's top (or fail exactly when it is empty), release pushes; a release of a free
    // slot or of an address that is not a slot start must throw and leave the model as it was.
    [Fact]
    public void Random_obtain_and_release_sequences_match_the_stack_model()
    {
        var operations = Gen.Select(
            Gen.Frequency(
                (4, Gen.Const(ArenaOperation.Obtain)),
                (4, Gen.Const(ArenaOperation.Release)),
                (1, Gen.Const(ArenaOperation.ReleaseFree)),
                (1, Gen.Const(ArenaOperation.ReleaseMisaligned))),
            Gen.Int[0, 1 << 20]);
        long executed = 0;

        operations.Array[1, 80].Sample(
            steps =>
            {
                using var arena = Create();
                nuint SlotAddress(int index) => arena.Range.From + ((nuint)index * SlotSize);
                var free = new Stack<int>(Enumerable.Range(0, SlotCount).Reverse());
                var held = new List<int>();
                foreach (var (operation, pick) in steps)
                {
                    switch (operation)
                    {
                        case ArenaOperation.Obtain:
                            bool obtained = arena.TryObtain(SlotSize, out byte* slot);
                            Assert.Equal(free.Count > 0, obtained);
                            if (obtained)
                            {
                                int index = free.Pop();
                                Assert.Equal(SlotAddress(index), (nuint)slot);
                                held.Add(index);
                            }

                            break;
                        case ArenaOperation.Release when held.Count > 0:
                            int released = held[pick % held.Count];
                            arena.Release((byte*)SlotAddress(released), SlotSize);
                            held.Remove(released);
                            free.Push(released);
                            break;
                        case ArenaOperation.ReleaseFree when free.Count > 0:
                            int alreadyFree = free.ElementAt(pick % free.Count);
                            Assert.Throws<ArgumentException>(() => arena.Release((byte*)SlotAddress(alreadyFree), SlotSize));
                            break;
                        case ArenaOperation.ReleaseMisaligned:
                            nuint inside = arena.Range.From + 1 + (nuint)(pick % (int)(arena.Range.Length - 1));
                            if ((inside - arena.Range.From) % SlotSize != 0)
                            {
                                Assert.Throws<ArgumentException>(() => arena.Release((byte*)inside, SlotSize));
                            }

                            break;
                    }

                    Assert.Equal(free.Count, arena.FreeSlotCount);
                }

                // Drain: the arena's free list must be exactly the model's stack, top first.
                while (free.Count > 0)
                {
                    Assert.Equal(SlotAddress(free.Pop()), (nuint)arena.Obtain(SlotSize));
                }

                Assert.False(arena.TryObtain(SlotSize, out _));
                Interlocked.Add(ref executed, steps.Length);
            },
            iter: 150,
            threads: 1);

        Assert.True(executed >= 3000, $"ran {executed} steps");
    }
}
