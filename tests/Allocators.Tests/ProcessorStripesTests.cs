using System.Numerics;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators.Tests;

public sealed class ProcessorStripesTests
{
    [Fact]
    public void There_is_a_stripe_per_processor_rounded_up_to_a_power_of_two_at_most_64()
    {
        var stripes = new ProcessorStripes<long>();

        Assert.True(BitOperations.IsPow2(stripes.StripeCount));
        Assert.True(stripes.StripeCount >= Math.Min(Environment.ProcessorCount, 64));
        Assert.True(stripes.StripeCount <= 64);
        Assert.Equal(stripes.StripeCount, new ProcessorStripes<object>().StripeCount);
    }

    [Fact]
    public void The_current_index_is_a_stripe_and_indexes_wrap()
    {
        var stripes = new ProcessorStripes<long>();
        int current = stripes.CurrentIndex;

        Assert.InRange(current, 0, stripes.StripeCount - 1);
        stripes[current] = 5;
        Assert.Equal(5, stripes[current + stripes.StripeCount]);
        Assert.Equal(5, stripes[current - stripes.StripeCount]);
        Assert.True(Unsafe.AreSame(ref stripes[current], ref stripes[current + (7 * stripes.StripeCount)]));
    }

    [Fact]
    public void New_stripes_hold_the_default_value()
    {
        var counts = new ProcessorStripes<long>();
        var items = new ProcessorStripes<string?>();

        for (int i = 0; i < counts.StripeCount; i++)
        {
            Assert.Equal(0, counts[i]);
            Assert.Null(items[i]);
        }
    }

    [Fact]
    public void Neighbouring_stripes_are_at_least_128_bytes_apart_whatever_they_hold()
    {
        AssertApart(new ProcessorStripes<long>(), sizeof(long));
        AssertApart(new ProcessorStripes<object?>(), IntPtr.Size);
        AssertApart(new ProcessorStripes<(long, long, long, long, long, long)>(), 6 * sizeof(long));
    }

    [Fact]
    public void Interlocked_adds_from_many_threads_on_their_own_stripes_all_count()
    {
        var stripes = new ProcessorStripes<long>();
        const int Threads = 4;
        const int AddsPerThread = 100_000;

        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, _ =>
        {
            for (int i = 0; i < AddsPerThread; i++)
            {
                Interlocked.Increment(ref stripes[stripes.CurrentIndex]);
            }
        });

        long sum = 0;
        for (int i = 0; i < stripes.StripeCount; i++)
        {
            sum += Volatile.Read(ref stripes[i]);
        }

        Assert.Equal(Threads * AddsPerThread, sum);
    }

    private static void AssertApart<T>(ProcessorStripes<T> stripes, int size)
    {
        for (int i = 0; i + 1 < stripes.StripeCount; i++)
        {
            long gap = (long)Unsafe.ByteOffset(ref stripes[i], ref stripes[i + 1]) - size;
            Assert.True(gap >= 128, $"stripes {i} and {i + 1} of {typeof(T).Name} are {gap} bytes apart");
        }
    }
}
