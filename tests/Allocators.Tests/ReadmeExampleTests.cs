using System.Buffers;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>Runs the README's tour example as written, so that the README never shows code that does not work.</summary>
public class ReadmeExampleTests
{
    [Fact]
    public void Readme_tour_example_runs()
    {
        var output = new StringWriter();

        // ---- begin README example (Console replaced by a writer) ----
        // 64 arenas of 64 KiB carved from one mapping; each request takes a slot and gives it back.
        using var slots = new ArenaMemorySource(MemorySource.CreateDefault(), 64 * 1024, slotCount: 64);

        unsafe
        {
            using var arena = new BumpAllocator(slots, 64 * 1024);   // one slot
            byte* header = arena.Allocate(128, 8);
            byte* body = arena.Allocate(4096, 64);                   // 64-byte aligned
            body = arena.GrowingReallocate(body, 4096, 8192, 64);    // the most recent block grows in place
            arena.Reset();                                           // everything released at once
        }

        // The same arena as a MemoryPool<byte>, for code that speaks Memory<byte>.
        using var bitSet = new BitSetAllocator(slots, blockSize: 64, memorySize: 32 * 1024);
        using var pool = new AllocatorMemoryPool(bitSet);
        using (IMemoryOwner<byte> buffer = pool.Rent(1000))
        {
            buffer.Memory.Span.Fill(42);
        }                                                            // freed here; use after Dispose throws
        output.WriteLine(bitSet.Statistics);
        // ---- end README example ----

        Assert.Contains("BytesInUse = 0", output.ToString(), StringComparison.Ordinal);
        Assert.Equal(63, slots.FreeSlotCount);   // the bump arena gave its slot back; the bit set still holds one
    }
}
