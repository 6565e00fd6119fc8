using AllocHosting.Allocators;

namespace AllocHosting.Tests;

public sealed class ProcessorSlotsTests
{
    [Fact]
    public void Processor_slots_take_from_their_own_slot_and_any_slot_when_asked()
    {
        var slots = new ProcessorSlots<string>();
        int stripes = new ProcessorStripes<object>().StripeCount;   // the slots are processor stripes
        int mine = slots.CurrentIndex;
        int other = (mine + 1) % stripes;

        Assert.True(slots.TryPut("a", other));
        Assert.False(slots.TryPut("b", other));
        Assert.Equal("a", slots.Exchange("c", other));
        Assert.Equal(1, slots.Count);
        Assert.Equal(stripes == 1 ? "c" : null, slots.Take(mine));
        Assert.Equal(stripes == 1 ? null : "c", slots.TakeAny());
        Assert.Null(slots.TakeAny());
        Assert.Equal(0, slots.Count);
    }
}
