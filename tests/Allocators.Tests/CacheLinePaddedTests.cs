using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators.Tests;

public sealed class CacheLinePaddedTests
{
    [Fact]
    public void The_value_has_128_untouched_bytes_before_and_after_it()
    {
        AssertPadded<nuint>();
        AssertPadded<long>();
        AssertPadded<(long, long, int)>();
    }

    [Fact]
    public void The_value_is_read_and_written_in_place()
    {
        var padded = new CacheLinePadded<long>();
        ref long value = ref padded.Value;
        value = 42;

        Assert.Equal(42, padded.Value);
        Assert.Equal(43, Interlocked.Increment(ref padded.Value));
        Assert.Equal(43, value);
    }

    private static void AssertPadded<T>()
        where T : unmanaged
    {
        var padded = new CacheLinePadded<T>();
        long before = (long)Unsafe.ByteOffset(ref Unsafe.As<CacheLinePadded<T>, byte>(ref padded), ref Unsafe.As<T, byte>(ref padded.Value));
        long after = Unsafe.SizeOf<CacheLinePadded<T>>() - before - Unsafe.SizeOf<T>();

        Assert.True(before >= 128, $"{typeof(T).Name}: {before} bytes before the value");
        Assert.True(after >= 128, $"{typeof(T).Name}: {after} bytes after the value");
    }
}
