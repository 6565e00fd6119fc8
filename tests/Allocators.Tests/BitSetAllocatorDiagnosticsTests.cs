using static AllocHosting.Allocators.Tests.BitSetAllocatorProbe;

namespace AllocHosting.Allocators.Tests;

// The public diagnostics: IsBlockAllocated reads one bit, Validate checks the bit set against the
// bookkeeping and reports a corrupted one.
public unsafe class BitSetAllocatorDiagnosticsTests
{
    [Fact]
    public void Is_block_allocated_follows_allocations_and_refuses_blocks_past_the_end()
    {
        using var allocator = Create(8, 100);
        byte* run = allocator.Allocate(24, 8);
        nuint first = BlockIndex(allocator, run);
        AssertBlocks(allocator, first, 3, allocated: true);
        allocator.Deallocate(run, 24, 8);
        AssertBlocks(allocator, first, 3, allocated: false);
        Assert.Throws<ArgumentOutOfRangeException>(() => allocator.IsBlockAllocated(allocator.BlockCount));
    }

    [Fact]
    public void Validate_catches_a_corrupted_bit_set()
    {
        using var allocator = Create(8, 100); // two words: 36 padding bits in the second
        byte* run = allocator.Allocate(16, 8);
        allocator.Validate();

        // The bit set follows the blocks in the region.
        ulong* words = (ulong*)allocator.Range.To;
        void Expect(string fragment)
        {
            var error = Assert.Throws<InvalidOperationException>(allocator.Validate);
            Assert.Contains(fragment, error.Message, StringComparison.Ordinal);
        }

        words[0] ^= 1UL << 40; // a free block marked allocated behind the allocator's back
        Expect("free blocks but the allocator counts");
        words[0] ^= 1UL << 40;
        allocator.Validate();

        words[1] &= ~1UL; // a padding bit cleared: memory past the region looks free
        Expect("free blocks but the allocator counts");
        words[1] |= 1UL;
        allocator.Validate();

        words[1] &= ~1UL; // a padding bit cleared, with the count fixed up by marking a free block
        words[0] |= 1UL << 40;
        Expect("padding bit");
        words[1] |= 1UL;
        words[0] &= ~(1UL << 40);
        allocator.Validate();

        words[1] |= 1UL << 63; // the run's second block moved after the high-water word
        words[0] &= ~(1UL << 62);
        Expect("after the high-water word");
        words[1] &= ~(1UL << 63);
        words[0] |= 1UL << 62;
        allocator.Validate();

        allocator.Deallocate(run, 16, 8);
        allocator.Validate();
    }
}
