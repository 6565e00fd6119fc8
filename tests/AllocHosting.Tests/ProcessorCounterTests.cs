using AllocHosting.Allocators;

namespace AllocHosting.Tests;

public sealed class ProcessorCounterTests
{
    [Fact]
    public void The_value_is_the_sum_of_the_adds_of_every_slot_and_indexes_wrap()
    {
        var slots = new ProcessorSlots<string>();
        int stripes = new ProcessorStripes<object>().StripeCount;   // the slots are processor stripes
        int mine = slots.CurrentIndex;
        int other = (mine + 1) % stripes;

        var counter = new ProcessorCounter();
        counter.Add(mine, 5);
        counter.Add(other, 7);
        counter.Add(mine + stripes, -2);   // indexes wrap
        Assert.Equal(10, counter.Value);
    }
}
