using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// <see cref="ProcessMalloc"/>, the allocation fast path of <see cref="NativeMemoryAllocator"/>: it
/// must be the same <c>malloc</c> that <see cref="NativeMemory"/> frees and resizes into, and report
/// exhaustion as null rather than an exception.
/// </summary>
public sealed unsafe class ProcessMallocTests
{
    [Fact]
    public void Is_available_on_Linux()
    {
        if (OperatingSystem.IsLinux())
        {
            Assert.True(ProcessMalloc.IsAvailable);
        }
    }

    [Fact]
    public void Blocks_are_resized_and_freed_by_NativeMemory()
    {
        if (!ProcessMalloc.IsAvailable)
        {
            return;   // Elsewhere NativeMemoryAllocator uses NativeMemory.Alloc itself.
        }

        byte* block = (byte*)ProcessMalloc.Malloc(100);
        Assert.True(block != null);
        Assert.Equal(0u, (nuint)block % NativeMemoryAllocator.MallocAlignment);
        new Span<byte>(block, 100).Fill(7);

        block = (byte*)NativeMemory.Realloc(block, 100_000);
        Assert.True(new ReadOnlySpan<byte>(block, 100).IndexOfAnyExcept((byte)7) < 0);
        NativeMemory.Free(block);
    }

    [Fact]
    public void Exhaustion_is_null_not_an_exception()
    {
        if (!ProcessMalloc.IsAvailable)
        {
            return;
        }

        Assert.True(ProcessMalloc.Malloc(nuint.MaxValue - 4096) == null);
    }
}
