namespace AllocHosting.Allocators.Tests;

public unsafe class AllocatorTests
{
    [Fact]
    public void Zero_size_sentinel_is_aligned_to_every_supported_alignment()
    {
        for (nuint alignment = 1; alignment <= Allocator.MaximumAlignment; alignment <<= 1)
        {
            Assert.True(Allocator.IsAligned((nuint)Allocator.ZeroSizeSentinel, alignment));
        }

        Assert.True(Allocator.ZeroSizeSentinel != null);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(3u)]
    [InlineData(12u)]
    [InlineData((1u << 30) + 1)]
    [InlineData(1u << 31)]
    public void Invalid_alignment_is_rejected(uint alignment)
    {
        Assert.False(Allocator.IsValidAlignment(alignment));
        var error = Assert.Throws<ArgumentException>(() => Allocator.ValidateRequest(8, alignment));
        Assert.Equal("alignment", error.ParamName);
        Assert.Contains("power of two", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Size_whose_rounding_overflows_is_rejected()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => Allocator.ValidateRequest(nuint.MaxValue - 3, 8));
        Assert.Equal("size", error.ParamName);
        Allocator.ValidateRequest(Allocator.MaximumSize, Allocator.MaximumAlignment);
    }

    [Theory]
    [InlineData(0u, 8u, 0u)]
    [InlineData(1u, 8u, 8u)]
    [InlineData(8u, 8u, 8u)]
    [InlineData(9u, 16u, 16u)]
    public void AlignUp_rounds_to_the_next_multiple(uint value, uint alignment, uint expected) =>
        Assert.Equal((nuint)expected, Allocator.AlignUp(value, alignment));

    [Fact]
    public void Memory_range_contains_is_half_open()
    {
        var range = new MemoryRange(100, 200);
        Assert.True(range.Contains(100));
        Assert.True(range.Contains(199));
        Assert.False(range.Contains(200));
        Assert.False(range.Contains(99));
        Assert.True(range.Contains(150, 50));
        Assert.False(range.Contains(150, 51));
        Assert.Equal((nuint)100, range.Length);
    }
}
