namespace AllocHosting.Allocators;

/// <summary>
/// The checking mode of an allocator that wraps a <c>malloc</c>-family library
/// (<see cref="NativeMemoryAllocator"/> and <see cref="ExternalNativeAllocator"/> with
/// <c>trackOwnership: true</c>): its live blocks in a <see cref="LiveBlockTable{TBlock}"/> under
/// one lock, so that <see cref="IAllocator.Owns"/> answers exactly and a foreign pointer, a double
/// free or a size or alignment the block does not have throws <see cref="ArgumentException"/>
/// before the library sees the pointer. One mechanism for both adaptors, which differ only in what
/// they keep per block (<typeparamref name="TBlock"/>: the exact size, or a range up to the usable size).
/// </summary>
/// <typeparam name="TBlock">What is kept per block.</typeparam>
/// <remarks>
/// <para>
/// Why a table and not a header before each block: the library's blocks are the caller's from
/// their first byte, and a pointer the library never handed out cannot be told apart by reading
/// memory before it (it may be unmapped); the table never touches the memory it is asked about.
/// The price is a lock and a dictionary update per operation, paid only by a checking instance:
/// the unchecked instances (<see cref="NativeMemoryAllocator.Shared"/>, the switchable allocator's
/// global) keep no table and pass pointers straight to the library.
/// </para>
/// <para>
/// Threads: every member takes the lock, except <see cref="Find"/>, which the caller calls inside
/// <see cref="Enter"/> so that it can work on the block (resize it in place) while no other thread
/// can free it. A block is in the table exactly while the caller may use it: the owner removes it
/// before the memory can be handed to anyone else (freed, or moved by a reallocation) and adds it
/// only once the memory is the caller's. <see cref="Close"/> (the owner's disposal) empties the
/// table for good; every later call throws <see cref="ObjectDisposedException"/> naming the owner,
/// and <see cref="TryAdd"/> returns <see langword="false"/> so that the owner frees the block it just got.
/// </para>
/// </remarks>
internal sealed unsafe class CheckedBlocks<TBlock>
    where TBlock : struct, ILiveBlock
{
    private readonly object _owner;
    private readonly Lock _lock = new();
    private readonly LiveBlockTable<TBlock> _table;

    // Under _lock: set once by Close.
    private bool _closed;

    /// <summary>Creates an empty table for <paramref name="owner"/>, named <paramref name="ownerName"/> in messages.</summary>
    public CheckedBlocks(object owner, string ownerName)
    {
        _owner = owner;
        _table = new LiveBlockTable<TBlock>(ownerName);
    }

    /// <summary>Whether <paramref name="pointer"/> is the address of a live block (false once closed).</summary>
    public bool Contains(void* pointer)
    {
        lock (_lock)
        {
            return _table.Contains(pointer);
        }
    }

    /// <summary>
    /// Records a block the library just handed out; <see langword="false"/> when the table is
    /// closed (the owner was disposed meanwhile: it frees the block and refuses the use). An entry
    /// already at that address is replaced: the block was freed behind the owner's back and reused.
    /// </summary>
    public bool TryAdd(void* pointer, TBlock block)
    {
        lock (_lock)
        {
            if (_closed)
            {
                return false;
            }

            _table.Set(pointer, block);
            return true;
        }
    }

    /// <summary>Takes the live block at <paramref name="pointer"/> out of the table (the caller then frees or moves it) and returns its entry.</summary>
    /// <exception cref="ArgumentException">No live block is at <paramref name="pointer"/> (a foreign pointer, a double free), or the size or alignment does not fit it; the table is unchanged.</exception>
    /// <exception cref="ObjectDisposedException">The table was closed.</exception>
    public TBlock Remove(void* pointer, nuint size, nuint alignment)
    {
        lock (_lock)
        {
            ThrowIfClosed();
            return _table.Remove(pointer, size, alignment);
        }
    }

    /// <summary>The lock of the table, for a caller that works on a block found with <see cref="Find"/>.</summary>
    public Lock.Scope Enter() => _lock.EnterScope();

    /// <summary>The entry of the live block at <paramref name="pointer"/>, by reference so that the caller can update it. Only inside <see cref="Enter"/>.</summary>
    /// <exception cref="ArgumentException">No live block is at <paramref name="pointer"/>, or the size or alignment does not fit it.</exception>
    /// <exception cref="ObjectDisposedException">The table was closed.</exception>
    public ref TBlock Find(void* pointer, nuint size, nuint alignment)
    {
        ThrowIfClosed();
        return ref _table.Find(pointer, size, alignment);
    }

    /// <summary>Closes the table and returns the blocks still live, which the owner frees (its disposal). Idempotent: a second call returns nothing.</summary>
    public KeyValuePair<nuint, TBlock>[] Close()
    {
        lock (_lock)
        {
            _closed = true;
            return _table.RemoveAll();
        }
    }

    private void ThrowIfClosed() => ObjectDisposedException.ThrowIf(_closed, _owner);
}
