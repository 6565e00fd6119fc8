using System.Diagnostics.CodeAnalysis;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// <see cref="CheckedBlocks{TBlock}"/>, the checking mode both malloc adaptors share: what it
/// refuses (foreign pointers, double frees, a size or alignment the block does not have) and what
/// closing it (the owner's disposal) does.
/// </summary>
public sealed unsafe class CheckedBlocksTests
{
    private static readonly void* First = (void*)0x1000;
    private static readonly void* Second = (void*)0x2000;

    [Fact]
    public void Added_blocks_are_owned_until_removed_with_their_size_and_alignment()
    {
        var blocks = new CheckedBlocks<Block>(this, "test");
        Assert.True(blocks.TryAdd(First, new Block(64, 16)));
        Assert.True(blocks.Contains(First));
        Assert.False(blocks.Contains(Second));

        Assert.Equal(new Block(64, 16), blocks.Remove(First, 64, 16));
        Assert.False(blocks.Contains(First));
    }

    [Fact]
    public void Foreign_pointers_double_frees_and_mismatches_throw_and_change_nothing()
    {
        var blocks = new CheckedBlocks<Block>(this, "test");
        blocks.TryAdd(First, new Block(64, 16));

        var foreign = Assert.Throws<ArgumentException>(() => blocks.Remove(Second, 64, 16));
        Assert.Contains("test", foreign.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => blocks.Remove(First, 32, 16));
        Assert.Throws<ArgumentException>(() => blocks.Remove(First, 64, 32));
        Assert.True(blocks.Contains(First));

        blocks.Remove(First, 64, 16);
        Assert.Throws<ArgumentException>(() => blocks.Remove(First, 64, 16));   // the double free
    }

    [Fact]
    public void A_found_block_can_be_updated_under_the_lock()
    {
        var blocks = new CheckedBlocks<Block>(this, "test");
        blocks.TryAdd(First, new Block(64, 16));
        using (blocks.Enter())
        {
            blocks.Find(First, 64, 16) = new Block(32, 16);
        }

        Assert.Throws<ArgumentException>(() => blocks.Remove(First, 64, 16));
        Assert.Equal(new Block(32, 16), blocks.Remove(First, 32, 16));
    }

    [Fact]
    public void Close_hands_back_the_live_blocks_once_and_refuses_everything_after()
    {
        var blocks = new CheckedBlocks<Block>(this, "test");
        blocks.TryAdd(First, new Block(64, 16));
        blocks.TryAdd(Second, new Block(8, 8));
        blocks.Remove(Second, 8, 8);

        var live = blocks.Close();
        Assert.Equal((nuint)First, Assert.Single(live).Key);
        Assert.Empty(blocks.Close());

        Assert.False(blocks.TryAdd(Second, new Block(8, 8)));
        Assert.False(blocks.Contains(First));
        var disposed = Assert.Throws<ObjectDisposedException>(() => blocks.Remove(First, 64, 16));
        Assert.Contains(nameof(CheckedBlocksTests), disposed.Message, StringComparison.Ordinal);
        Assert.Throws<ObjectDisposedException>(() =>
        {
            using (blocks.Enter())
            {
                blocks.Find(First, 64, 16);
            }
        });
    }

    private readonly record struct Block(nuint Size, nuint Alignment) : ILiveBlock
    {
        public bool Fits(nuint size, nuint alignment) => size == Size && alignment == Alignment;

        [DoesNotReturn]
        public void ThrowMismatch(void* pointer, nuint size, nuint alignment) =>
            throw new ArgumentException($"mismatch at 0x{(nuint)pointer:X}", nameof(pointer));
    }
}
