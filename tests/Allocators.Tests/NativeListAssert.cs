namespace AllocHosting.Allocators.Tests;

// What every NativeList test of a list that is disposed, or whose memory went back with its context,
// checks: every member but Dispose throws ObjectDisposedException.
internal static class NativeListAssert
{
    /// <summary>Asserts that every member but Dispose throws; returns what Add threw, for its message.</summary>
    public static ObjectDisposedException EveryMemberButDisposeThrows<T>(NativeList<T> list, T item, int capacity)
        where T : unmanaged
    {
        ObjectDisposedException added = Assert.Throws<ObjectDisposedException>(() => list.Add(item));
        Assert.Throws<ObjectDisposedException>(() => list.Count);
        Assert.Throws<ObjectDisposedException>(() => list.Capacity);
        Assert.Throws<ObjectDisposedException>(() => list[0]);
        Assert.Throws<ObjectDisposedException>(() => list.AddRange([item]));
        Assert.Throws<ObjectDisposedException>(() => list.Insert(0, item));
        Assert.Throws<ObjectDisposedException>(() => list.RemoveAt(0));
        Assert.Throws<ObjectDisposedException>(list.Clear);
        Assert.Throws<ObjectDisposedException>(() => list.EnsureCapacity(capacity));
        Assert.Throws<ObjectDisposedException>(list.TrimExcess);
        Assert.Throws<ObjectDisposedException>(() => list.AsSpan());
        Assert.Throws<ObjectDisposedException>(() => list.GetEnumerator());
        return added;
    }
}
