namespace AllocHosting.Allocators.Tests;

/// <summary>A pattern written into a block and checked later, to see that no byte of it was lost or overwritten.</summary>
internal static unsafe class BlockContents
{
    public static byte Canary(nint pointer) => (byte)((pointer >> 4) ^ (pointer >> 12) | 1);

    public static void Fill(byte* block, nuint size)
    {
        for (nuint i = 0; i < size; i++)
        {
            block[i] = (byte)(i * 7);
        }
    }

    public static void Check(byte* block, nuint size)
    {
        for (nuint i = 0; i < size; i++)
        {
            Assert.True(block[i] == (byte)(i * 7), $"byte {i} of {size} was lost");
        }
    }
}
