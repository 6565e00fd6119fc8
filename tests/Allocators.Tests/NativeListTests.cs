using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;
using AllocHosting.Allocators.Tests.TestDoubles;

namespace AllocHosting.Allocators.Tests;

// NativeList<T>: capacity from the usable size, in-place growth, the flow's allocator, disposal and
// bad input. The model-based test against List<T> is in NativeListPropertyTests.
public unsafe class NativeListTests
{
    private readonly record struct Triple(int A, int B, int C);

    // 64 KiB per element: int.MaxValue of them is more than any address space.
    private struct Huge
    {
#pragma warning disable CS0649 // never written: only its size matters
        public fixed byte Bytes[64 * 1024];
#pragma warning restore CS0649
    }

    [Theory]
    [InlineData("bitset")]
    [InlineData("tree")]
    [InlineData("threadlocal")]
    [InlineData("native-tracked")]
    [InlineData("memorymap")]
    public void Capacity_is_the_usable_size_divided_by_the_element_size(string allocatorName)
    {
        using AllocatorBase allocator = AllocatorFactories.Create(allocatorName);
        AssertCapacityIsUsableSize(allocator);
    }

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void Capacity_is_mimallocs_usable_size_divided_by_the_element_size()
    {
        using var allocator = ExternalNativeAllocator.Load(NativeAllocatorLibrary.Mimalloc, trackOwnership: true);
        AssertCapacityIsUsableSize(allocator);
    }

    [NativeAllocatorFact(NativeAllocatorLibrary.Jemalloc)]
    public void Capacity_is_jemallocs_usable_size_divided_by_the_element_size()
    {
        using var allocator = ExternalNativeAllocator.Load(NativeAllocatorLibrary.Jemalloc, trackOwnership: true);
        AssertCapacityIsUsableSize(allocator);
    }

    // A bump allocator grows its most recent block in place, so the list never moves; a fresh tree
    // allocator's block doubles in place while its buddy is free, so most growths stay. The same
    // list with in-place growth off moves on every growth.
    [Theory]
    [InlineData("bump")]
    [InlineData("tree")]
    public void Growth_is_in_place_where_the_allocator_can(string allocatorName)
    {
        using AllocatorBase inPlaceAllocator = AllocatorFactories.Create(allocatorName);
        using AllocatorBase movingAllocator = AllocatorFactories.Create(allocatorName);
        var inPlace = new CountingAllocator(inPlaceAllocator);
        var moving = new CountingAllocator(movingAllocator);

        int growths = FillAndCountGrowths(inPlace, growInPlace: true);
        int movingGrowths = FillAndCountGrowths(moving, growInPlace: false);

        Assert.True(growths >= 8, $"only {growths} growths");
        Assert.Equal(growths, movingGrowths);
        Assert.Equal(growths, inPlace.Allocations + inPlace.InPlaceGrowthsGranted);
        Assert.True(inPlace.InPlaceGrowthsGranted >= growths / 2, $"{inPlace.InPlaceGrowthsGranted} of {growths} growths in place");
        Assert.Equal(inPlace.Allocations, inPlace.Frees);
        if (allocatorName == "bump")
        {
            Assert.Equal(1, inPlace.Allocations);
        }

        Assert.Equal(growths, moving.Allocations);
        Assert.Equal(growths, moving.Frees);
        Assert.Equal(0, moving.InPlaceGrowthsAsked);
        Assert.Equal(0, inPlaceAllocator.Statistics.BytesInUse);
    }

    // The C runtime never grows in place: the list asks, is refused, and moves.
    [Fact]
    public void Where_the_allocator_cannot_grow_in_place_the_list_moves()
    {
        using var native = new NativeMemoryAllocator(trackOwnership: true);
        var counting = new CountingAllocator(native);

        int growths = FillAndCountGrowths(counting, growInPlace: true);

        Assert.Equal(growths, counting.Allocations);
        Assert.Equal(growths - 1, counting.InPlaceGrowthsAsked);
        Assert.Equal(0, counting.InPlaceGrowthsGranted);
        Assert.Equal(0, native.Statistics.BytesInUse);
    }

    [Fact]
    public void A_list_created_in_a_context_scope_takes_its_memory_from_the_context_allocator()
    {
        using var global = new NativeMemoryAllocator(trackOwnership: true);
        var switchable = new SwitchableAllocator(global);
        using var context = ContextAllocator.ShortLived(new BumpAllocator(new NativeMemorySource(), 64 * 1024));

        using (switchable.UseContext(context))
        {
            using var list = new NativeList<long>(switchable);
            for (int i = 0; i < 4000; i++)
            {
                list.Add(i);
            }

            Assert.True(context.Owns((byte*)Unsafe.AsPointer(ref list[0])), "the elements live in the context allocator");
            Assert.True(context.Statistics.BytesInUse >= list.Capacity * sizeof(long));
            Assert.Equal(0, global.Statistics.BytesInUse);
            Assert.Equal(3999L * 4000 / 2, Sum(list));
        }

        Assert.Equal(0, global.Statistics.BytesInUse);
    }

    [Fact]
    public void The_parameterless_constructor_allocates_where_the_default_switchable_allocator_points_the_flow()
    {
        using var context = ContextAllocator.ShortLived(new BumpAllocator(new NativeMemorySource(), 64 * 1024));

        using (SwitchableAllocator.Default.UseContext(context))
        {
            using var list = new NativeList<int>();
            using var sized = new NativeList<int>(100);
            list.AddRange([1, 2, 3]);

            Assert.Same(SwitchableAllocator.Default, list.BackingAllocator);
            Assert.True(context.Owns((byte*)Unsafe.AsPointer(ref list[0])));
            Assert.True(sized.Capacity >= 100);
        }

        using var outside = new NativeList<int>();
        outside.Add(7);
        Assert.False(context.Owns((byte*)Unsafe.AsPointer(ref outside[0])), "outside the scope the flow is in global mode");
    }

    [Fact]
    public void Dispose_frees_the_block_and_every_later_use_throws()
    {
        using AllocatorBase allocator = AllocatorFactories.Create("tree");
        var list = new NativeList<int>(allocator);
        list.AddRange([1, 2, 3, 4, 5, 6]);
        Assert.True(allocator.Statistics.BytesInUse > 0);

        list.Dispose();
        list.Dispose();

        Assert.Equal(0, allocator.Statistics.BytesInUse);
        NativeListAssert.EveryMemberButDisposeThrows(list, 1, capacity: 10);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [Fact]
    public void Bad_arguments_throw_what_List_throws_and_change_nothing()
    {
        using AllocatorBase allocator = AllocatorFactories.Create("tree");
        Assert.Throws<ArgumentNullException>(() => new NativeList<int>(null!));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeList<int>(allocator, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new NativeList<int>(-1));
        using var list = new NativeList<int>(allocator);
        list.AddRange([10, 20, 30]);

        Assert.Equal("index", Assert.Throws<ArgumentOutOfRangeException>(() => list[3]).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => list[-1]);
        Assert.Throws<ArgumentOutOfRangeException>(() => list.Insert(4, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => list.Insert(-1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => list.RemoveAt(3));
        Assert.Throws<ArgumentOutOfRangeException>(() => list.RemoveAt(-1));
        Assert.Equal("capacity", Assert.Throws<ArgumentOutOfRangeException>(() => list.EnsureCapacity(-1)).ParamName);

        Assert.Equal(new[] { 10, 20, 30 }, list.AsSpan().ToArray());
    }

    // Growth beyond what the allocator has (a full region, more bytes than an address space) throws
    // AllocatorExhaustedException, an OutOfMemoryException as List<T> throws, and keeps the list.
    [Fact]
    public void Growth_the_allocator_cannot_serve_throws_and_keeps_the_list()
    {
        using var bump = new BumpAllocator(new NativeMemorySource(), 4096);
        using var list = new NativeList<int>(bump);
        int added = 0;
        Assert.Throws<AllocatorExhaustedException>(() =>
        {
            for (; added < 10_000; added++)
            {
                list.Add(added);
            }
        });

        Assert.Equal(added, list.Count);
        Assert.Equal(Enumerable.Range(0, added), list.AsSpan().ToArray());
        Assert.Throws<AllocatorExhaustedException>(() => list.EnsureCapacity(int.MaxValue));
        Assert.Equal(added, list.Count);

        using var native = new NativeMemoryAllocator(trackOwnership: true);
        using var huge = new NativeList<Huge>(native, 2);
        Assert.Throws<AllocatorExhaustedException>(() => huge.EnsureCapacity(int.MaxValue));
        Assert.Throws<AllocatorExhaustedException>(() => new NativeList<Huge>(native, int.MaxValue));
        huge.Add(default);
        Assert.Equal(1, huge.Count);
    }

    [Fact]
    public void TrimExcess_shrinks_to_the_usable_size_of_the_elements_and_an_empty_list_frees_its_block()
    {
        using AllocatorBase allocator = AllocatorFactories.Create("tree");
        using var list = new NativeList<int>(allocator, 1000);
        list.AddRange([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

        list.TrimExcess();

        Assert.Equal((int)(allocator.GetUsableSize(40, 4) / 4), list.Capacity);
        Assert.Equal(Enumerable.Range(1, 10), list.AsSpan().ToArray());
        list.TrimExcess();
        Assert.Equal((int)(allocator.GetUsableSize(40, 4) / 4), list.Capacity);

        list.Clear();
        list.TrimExcess();
        Assert.Equal(0, list.Capacity);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
        list.Add(5);
        Assert.Equal(5, list[0]);
    }

    [Fact]
    public void Insert_RemoveAt_and_the_indexer_move_and_change_elements_in_place()
    {
        using AllocatorBase allocator = AllocatorFactories.Create("bitset");
        using var list = new NativeList<Triple>(allocator);
        list.Add(new Triple(1, 1, 1));
        list.Add(new Triple(3, 3, 3));
        list.Insert(1, new Triple(2, 2, 2));
        list.Insert(0, new Triple(0, 0, 0));
        list.Insert(4, new Triple(4, 4, 4));
        list[2] = list[2] with { C = 20 };
        ref Triple last = ref list[4];
        last = new Triple(40, 40, 40);
        list.RemoveAt(0);

        Assert.Equal(new Triple[] { new(1, 1, 1), new(2, 2, 20), new(3, 3, 3), new(40, 40, 40) }, list.AsSpan().ToArray());
        int visited = 0;
        foreach (ref Triple item in list)
        {
            item = item with { B = -1 };
            visited++;
        }

        Assert.Equal(4, visited);
        Assert.All(list.AsSpan().ToArray(), item => Assert.Equal(-1, item.B));
    }

    private static void AssertCapacityIsUsableSize(IAllocator allocator)
    {
        using (var list = new NativeList<int>(allocator, 100))
        {
            Assert.Equal((int)(allocator.GetUsableSize(400, 4) / 4), list.Capacity);

            // Filled to capacity, one more doubles the capacity, then takes the excess of that.
            int before = list.Capacity;
            for (int i = 0; i <= before; i++)
            {
                list.Add(i);
            }

            Assert.Equal((int)(allocator.GetUsableSize((nuint)before * 2 * 4, 4) / 4), list.Capacity);
        }

        using (var triples = new NativeList<Triple>(allocator, 10))
        {
            Assert.Equal((int)(allocator.GetUsableSize(120, 4) / 12), triples.Capacity);
        }

        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    // Adds elements one by one until the list holds 4000 ints, and returns how often it grew.
    private static int FillAndCountGrowths(IAllocator allocator, bool growInPlace)
    {
        int growths = 0;
        using var list = new NativeList<int>(allocator, growInPlace: growInPlace);
        int capacity = list.Capacity;
        for (int i = 0; i < 4000; i++)
        {
            list.Add(i);
            if (list.Capacity != capacity)
            {
                growths++;
                capacity = list.Capacity;
            }
        }

        Assert.Equal(Enumerable.Range(0, 4000), list.AsSpan().ToArray());
        return growths;
    }

    private static long Sum(NativeList<long> list)
    {
        long sum = 0;
        foreach (long value in list)
        {
            sum += value;
        }

        return sum;
    }
}
