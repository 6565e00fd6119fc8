using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

// A NativeList whose block came from a context allocator (directly or through a switchable
// allocator) behaves as disposed once that context's use ends (Reset, Dispose): it can no longer
// read or write the memory, which serves the context's next use, nor free a block of that use.
public unsafe class NativeListContextLifetimeTests
{
    public static TheoryData<string, bool> Contexts => new()
    {
        { "bump", false },
        { "bump", true },
        { "bitset", false },
        { "bitset", true },
        { "tree", false },
        { "tree", true },
    };

    [Theory]
    [MemberData(nameof(Contexts))]
    public void After_its_context_is_reset_a_list_throws_on_every_member_but_Dispose(string kind, bool throughSwitchable)
    {
        using ContextAllocator context = CreateContext(kind);
        NativeList<long> list = CreateList(context, throughSwitchable, 100);

        context.Reset();

        AssertBehavesAsReleased(list);
        list.Dispose();
        list.Dispose();
        Assert.Throws<ObjectDisposedException>(() => list.Count);
    }

    // The block the stale list held is handed out again by the context's next use; the stale
    // Dispose must not free it (for a bit set or tree that would hand the same memory out twice).
    [Theory]
    [MemberData(nameof(Contexts))]
    public void Disposing_a_list_after_its_context_was_reset_frees_nothing_of_the_next_use(string kind, bool throughSwitchable)
    {
        using ContextAllocator context = CreateContext(kind);
        NativeList<long> stale = CreateList(context, throughSwitchable, 100);
        nuint staleBytes = (nuint)stale.Capacity * sizeof(long);

        context.Reset();
        byte* reused = context.Allocate(staleBytes, 8);
        long inUse = context.Statistics.BytesInUse;

        stale.Dispose();

        Assert.Equal(inUse, context.Statistics.BytesInUse);
        byte* another = context.Allocate(staleBytes, 8);
        Assert.True(another != reused, "the next use's block was not freed by the stale list");
        context.Deallocate(another, staleBytes, 8);
        context.Deallocate(reused, staleBytes, 8);   // still live: a double free would throw
    }

    [Theory]
    [MemberData(nameof(Contexts))]
    public void After_its_context_is_disposed_a_list_behaves_as_disposed_and_Dispose_does_not_throw(string kind, bool throughSwitchable)
    {
        ContextAllocator context = CreateContext(kind);
        NativeList<long> list = CreateList(context, throughSwitchable, 100);

        context.Dispose();

        AssertBehavesAsReleased(list);
        list.Dispose();
    }

    // The list records the use its block belongs to at every growth: one created before a reset and
    // emptied by TrimExcess holds no block, so the reset does not concern it, and what it grows
    // afterwards belongs to the current use.
    [Theory]
    [MemberData(nameof(Contexts))]
    public void A_list_that_gave_its_block_back_before_the_reset_stays_usable(string kind, bool throughSwitchable)
    {
        using ContextAllocator context = CreateContext(kind);
        NativeList<long> list = CreateList(context, throughSwitchable, 10);
        list.Clear();
        list.TrimExcess();

        context.Reset();

        using (throughSwitchable ? s_switchable.UseContext(context) : default(AllocatorScope?))
        {
            list.AddRange([1, 2, 3]);
        }

        Assert.Equal(6, list[0] + list[1] + list[2]);
        Assert.True(context.Owns((byte*)Unsafe.AsPointer(ref list[0])));
        long inUse = context.Statistics.BytesInUse;
        list.Dispose();
        if (kind != "bump")
        {
            // (A thread-safe bump context never rewinds: its frees give nothing back before Reset.)
            Assert.True(context.Statistics.BytesInUse < inUse, "the block was freed into the current use");
        }
    }

    // The trap the type's remarks name: a long-lived list over a switchable allocator that grows in a
    // flow whose allocator is a context (a request) moves into that context's memory. When the context's
    // use ends the list throws instead of reading or writing memory it no longer holds.
    [Fact]
    public void A_list_created_outside_a_context_that_grows_inside_one_goes_with_it()
    {
        using ContextAllocator context = CreateContext("bitset");
        using var list = new NativeList<long>(s_switchable);
        list.AddRange([1, 2, 3]);   // global mode: the switchable allocator's global

        using (s_switchable.UseContext(context))
        {
            list.EnsureCapacity(500);   // moves into the context
        }

        Assert.True(context.Owns((byte*)Unsafe.AsPointer(ref list[0])));
        Assert.Equal(6, list[0] + list[1] + list[2]);

        context.Reset();

        AssertBehavesAsReleased(list);
    }

    [Fact]
    public void A_list_over_another_allocator_is_not_concerned_by_any_context()
    {
        using var context = CreateContext("bitset");
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global);
        using var list = new NativeList<long>(switchable);
        list.AddRange([1, 2, 3]);

        context.Reset();

        list.Add(4);
        Assert.Equal(10, list[0] + list[1] + list[2] + list[3]);
    }

    private static readonly SwitchableAllocator s_switchable = new(new NativeMemoryAllocator(trackOwnership: true));

    private static ContextAllocator CreateContext(string kind) => kind switch
    {
        // The thread-safe forms, as a request arena's chunks are.
        "bump" => ContextAllocator.ShortLived(new BumpAllocator(new NativeMemorySource(), 64 * 1024), threadSafe: true),
        "bitset" => ContextAllocator.MediumLived(new BitSetAllocator(new NativeMemorySource(), blockSize: 64, memorySize: 64 * 1024), new Lock()),
        "tree" => ContextAllocator.LongLived(new MultipleBinarySearchTreeAllocator(new NativeMemorySource(), 64 * 1024), new Lock()),
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    // A list of `count` values whose block the context served, over the context itself or over a
    // switchable allocator whose flow chose the context.
    private static NativeList<long> CreateList(ContextAllocator context, bool throughSwitchable, int count)
    {
        NativeList<long> list;
        using (throughSwitchable ? s_switchable.UseContext(context) : default(AllocatorScope?))
        {
            list = new NativeList<long>(throughSwitchable ? s_switchable : context);
            for (long i = 0; i < count; i++)
            {
                list.Add(i);
            }
        }

        Assert.True(context.Owns((byte*)Unsafe.AsPointer(ref list[0])), "the context served the list");
        return list;
    }

    private static void AssertBehavesAsReleased(NativeList<long> list)
    {
        ObjectDisposedException released = NativeListAssert.EveryMemberButDisposeThrows(list, 1L, capacity: 10_000);
        Assert.Contains("went back with the request or context allocator", released.Message, StringComparison.Ordinal);
        Assert.Throws<ObjectDisposedException>(() => list[-1]);
    }
}
