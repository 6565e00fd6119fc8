namespace AllocHosting.Allocators.Tests.TestDoubles;

/// <summary>
/// A growable list of longs in native memory, grown by <see cref="IAllocator.Reallocate"/> through any
/// allocator: the C# stand-in for the seed's <c>Vec&lt;usize&gt;</c> in its switchable tests and benches.
/// </summary>
internal sealed unsafe class ReallocatingList : IDisposable
{
    private readonly IAllocator _allocator;

    // [0, _count) written; _capacity elements allocated at _items (the zero-size sentinel when 0).
    private long* _items;
    private int _count;
    private int _capacity;

    public ReallocatingList(IAllocator allocator, int capacity = 0)
    {
        _allocator = allocator;
        _items = (long*)allocator.Allocate(ByteSize(capacity), sizeof(long));
        _capacity = capacity;
    }

    public int Count => _count;

    public int Capacity => _capacity;

    public long this[int index]
    {
        get
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)index, (uint)_count, nameof(index));
            return _items[index];
        }
    }

    public void Add(long value)
    {
        if (_count == _capacity)
        {
            Grow();
        }

        _items[_count++] = value;
    }

    public void Dispose()
    {
        if (_items != null)
        {
            _allocator.Deallocate((byte*)_items, ByteSize(_capacity), sizeof(long));
            _items = null;
            _count = 0;
            _capacity = 0;
        }
    }

    private static nuint ByteSize(int elements) => (nuint)elements * sizeof(long);

    private void Grow()
    {
        int newCapacity = Math.Max(4, _capacity * 2);
        _items = (long*)_allocator.Reallocate((byte*)_items, ByteSize(_capacity), ByteSize(newCapacity), sizeof(long));
        _capacity = newCapacity;
    }
}
