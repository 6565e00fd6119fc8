
namespace AllocHosting.Allocators.Tests;

public class OwnerRegistryTests
{
    // Addresses far from anything the process maps, distinct per test so tests may run in parallel.
    private static readonly nuint Base = unchecked((nuint)0x7A00_0000_0000UL);

    [Fact]
    public void Registered_range_is_found_at_every_granule_and_nowhere_else()
    {
        nuint start = Base + 0x10_0000;
        nuint length = 5 * 4096;
        var owner = new NativeMemoryAllocator();
        OwnerRegistry.Register(start, length, owner);
        try
        {
            Assert.Same(owner, OwnerRegistry.Find(start));
            Assert.Same(owner, OwnerRegistry.Find(start + 4096 + 17));
            Assert.Same(owner, OwnerRegistry.Find(start + length - 1));
            Assert.Null(OwnerRegistry.Find(start - 1));
            Assert.Null(OwnerRegistry.Find(start + length));
        }
        finally
        {
            OwnerRegistry.Unregister(start, length, owner);
        }

        Assert.Null(OwnerRegistry.Find(start));
    }

    [Fact]
    public void Range_crossing_leaf_boundaries_is_registered_whole()
    {
        // A leaf covers 16 MiB; start 4 KiB before a leaf boundary and span three leaves.
        nuint start = Base + (0x100_0000 * 3) - 4096;
        nuint length = 0x200_0000 + 8192;
        var owner = new NativeMemoryAllocator();
        OwnerRegistry.Register(start, length, owner);
        try
        {
            for (nuint offset = 0; offset < length; offset += 4096)
            {
                Assert.Same(owner, OwnerRegistry.Find(start + offset));
            }
        }
        finally
        {
            OwnerRegistry.Unregister(start, length, owner);
        }
    }

    [Fact]
    public void Overlapping_registration_throws_and_changes_nothing()
    {
        nuint start = Base + 0x1000_0000;
        var first = new NativeMemoryAllocator();
        var second = new NativeMemoryAllocator();
        OwnerRegistry.Register(start, 4 * 4096, first);
        try
        {
            Assert.Throws<InvalidOperationException>(() => OwnerRegistry.Register(start + 3 * 4096, 4 * 4096, second));
            Assert.Same(first, OwnerRegistry.Find(start + 3 * 4096));
            Assert.Null(OwnerRegistry.Find(start + 5 * 4096));

            // Unregistering with the wrong owner leaves the real owner in place.
            OwnerRegistry.Unregister(start, 4 * 4096, second);
            Assert.Same(first, OwnerRegistry.Find(start));
        }
        finally
        {
            OwnerRegistry.Unregister(start, 4 * 4096, first);
        }
    }

    [Fact]
    public void Addresses_beyond_48_bits_and_empty_ranges_are_rejected_or_unowned()
    {
        Assert.Null(OwnerRegistry.Find(unchecked((nuint)0xFFFF_8000_0000_0000UL)));
        Assert.Throws<ArgumentOutOfRangeException>(() => OwnerRegistry.Register((nuint)Base, 0, new NativeMemoryAllocator()));
        Assert.Throws<ArgumentOutOfRangeException>(() => OwnerRegistry.Register(unchecked((nuint)0xFFFF_F000_0000UL), 0x2000_0000, new NativeMemoryAllocator()));
    }

    [Fact]
    public async Task Lookups_race_safely_with_registration()
    {
        nuint start = Base + 0x2000_0000;
        var owner = new NativeMemoryAllocator();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var reader = Task.Run(() =>
        {
            long seen = 0;
            for (int i = 0; (i < 2_000_000 || seen == 0) && !stop.IsCancellationRequested; i++)
            {
                object? found = OwnerRegistry.Find(start + (nuint)(i % 64) * 4096);
                Assert.True(found is null || ReferenceEquals(found, owner));
                seen += found is null ? 0 : 1;
            }

            return seen;
        });

        // The writer keeps registering until the reader is done (bounded by the token), so the
        // reader has the chance to see the owner however the threads are scheduled.
        int rounds = 0;
        while (rounds < 200 || (!reader.IsCompleted && !stop.IsCancellationRequested))
        {
            OwnerRegistry.Register(start, 64 * 4096, owner);
            Thread.SpinWait(64);
            OwnerRegistry.Unregister(start, 64 * 4096, owner);
            rounds++;
        }

        stop.Cancel();
        long seen = await reader;
        Assert.True(seen > 0, $"the reader never saw the owner in {rounds} registration rounds");
        Assert.Null(OwnerRegistry.Find(start));
    }
}
