namespace AllocHosting.Allocators;

/// <summary>
/// The contract every allocator of the suite implements: the seed's four operations
/// (allocate, deallocate, growing and shrinking reallocate) plus a non-throwing
/// allocation, in-place resizing, the usable size of a request, ownership tests and
/// statistics.
/// </summary>
/// <remarks>
/// <para>
/// Sizes are in bytes; alignments are powers of two no larger than
/// <see cref="Allocator.MaximumAlignment"/>. A zero-byte request returns
/// <see cref="Allocator.ZeroSizeSentinel"/>, an address aligned to every supported
/// alignment that is never dereferenced and never passed to the allocator's own
/// bookkeeping: freeing it (with size zero) does nothing.
/// </para>
/// <para>
/// Invalid input (an alignment that is not a power of two, a size whose rounding would
/// overflow, a pointer the allocator does not own, a double free that the allocator can
/// see) throws and leaves the allocator unchanged. Exhaustion throws
/// <see cref="AllocatorExhaustedException"/> (an <see cref="OutOfMemoryException"/>)
/// from the throwing forms and returns <see langword="false"/> from the <c>Try</c> forms.
/// </para>
/// <para>
/// <b>Bad input.</b> A free, growing or shrinking reallocation, or in-place resize is given a block
/// as its address, size and alignment. Refused with <see cref="ArgumentException"/>, with nothing
/// changed (every live block stays live, owned and intact, and the statistics are the same): an
/// address that is not the start of a live block of this allocator (memory from elsewhere, a
/// pointer inside a live block, a block already freed, or the old address of a block a
/// reallocation moved), and a size larger than the block's usable size (<see cref="GetUsableSize"/>
/// of the size it was allocated or last resized with, or more where an in-place resize kept a larger
/// block). Tolerated, because the allocator acts on what it recorded and not on the caller's
/// figure: a size from the block's own up to its usable size (documented on
/// <see cref="GetUsableSize"/>); a smaller size with the same usable size (it names the same
/// allocation unit); a smaller size still where the allocator keeps only an upper bound
/// (<see cref="ThreadLocalAllocator"/>'s slab class, <see cref="MemoryMapAllocator"/>'s mapping); and
/// another valid alignment, except where the allocator records it (a tracking
/// <see cref="NativeMemoryAllocator"/>, <see cref="MemoryPoolAllocator"/>), since a free needs none.
/// Two allocators cannot see every bad input, as their remarks say: a <see cref="BumpAllocator"/> knows
/// only its most recent block, so a bad free of an older block inside the part handed out is
/// accepted and ignored; an untracked <see cref="NativeMemoryAllocator"/> passes every pointer to the
/// C runtime (undefined behaviour, like <c>free</c>). A growing reallocation that cannot be served,
/// whatever the size, is exhaustion, never bad input: the <c>Try</c> form returns
/// <see langword="false"/>, the throwing form throws <see cref="AllocatorExhaustedException"/>, and
/// the original block stays live, owned, intact and freeable with its old size.
/// </para>
/// <para>
/// A <c>Try</c> form never throws for exhaustion or for a valid size no allocator can serve (up to
/// <see cref="Allocator.MaximumSize"/>): it returns <see langword="false"/>. A disposed allocator
/// throws <see cref="ObjectDisposedException"/> from every member that allocates, frees or resizes,
/// the <c>Try</c> forms included (see <see cref="AllocatorBase"/>).
/// </para>
/// <para>Unless a type says otherwise, an allocator is not thread-safe.</para>
/// </remarks>
public unsafe interface IAllocator
{
    /// <summary>Allocates <paramref name="size"/> bytes aligned to <paramref name="alignment"/>.</summary>
    /// <returns>The address of the block; <see cref="Allocator.ZeroSizeSentinel"/> when <paramref name="size"/> is zero.</returns>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a supported power of two.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> cannot be rounded up to <paramref name="alignment"/> without overflow.</exception>
    /// <exception cref="AllocatorExhaustedException">The allocator has no room for the request.</exception>
    byte* Allocate(nuint size, nuint alignment);

    /// <summary>Allocates like <see cref="Allocate"/> but reports exhaustion by returning <see langword="false"/>.</summary>
    /// <param name="size">Bytes wanted.</param>
    /// <param name="alignment">Required alignment, a power of two.</param>
    /// <param name="pointer">The block, or <see langword="null"/> when the allocator is exhausted.</param>
    /// <returns><see langword="true"/> when the block was allocated.</returns>
    bool TryAllocate(nuint size, nuint alignment, out byte* pointer);

    /// <summary>Allocates like <see cref="Allocate"/> and sets exactly <paramref name="size"/> bytes to zero.</summary>
    byte* AllocateZeroed(nuint size, nuint alignment);

    /// <summary>Frees a block obtained from this allocator with the same <paramref name="size"/> and <paramref name="alignment"/>.</summary>
    /// <exception cref="ArgumentException">The pointer is not the start of a live block of this allocator (foreign, interior, or already free), or the size exceeds the block's usable size; see "Bad input" in the remarks for what each allocator can tell. Nothing changed.</exception>
    void Deallocate(byte* pointer, nuint size, nuint alignment);

    /// <summary>
    /// Grows a block to <paramref name="newSize"/> bytes, in place when possible, otherwise by
    /// moving it; the first <paramref name="currentSize"/> bytes are preserved.
    /// </summary>
    /// <returns>The (possibly new) address of the block.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="newSize"/> is not larger than <paramref name="currentSize"/>.</exception>
    /// <exception cref="ArgumentException">The pointer and size do not name a live block (as for <see cref="Deallocate"/>); nothing changed.</exception>
    /// <exception cref="AllocatorExhaustedException">There is no room; the original block is still valid.</exception>
    byte* GrowingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>Grows like <see cref="GrowingReallocate"/> but reports exhaustion by returning <see langword="false"/> (the original block stays valid).</summary>
    bool TryGrowingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment, out byte* newPointer);

    /// <summary>Shrinks a block to <paramref name="newSize"/> bytes (greater than zero); the first <paramref name="newSize"/> bytes are preserved.</summary>
    /// <returns>The (possibly new) address of the block.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="newSize"/> is zero or not smaller than <paramref name="currentSize"/>.</exception>
    /// <exception cref="ArgumentException">The pointer and size do not name a live block (as for <see cref="Deallocate"/>); nothing changed.</exception>
    byte* ShrinkingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>
    /// Resizes a block, following the seed's zero-size rules: equal sizes return the pointer,
    /// growing from zero allocates, shrinking to zero frees and returns
    /// <see cref="Allocator.ZeroSizeSentinel"/>.
    /// </summary>
    byte* Reallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>Tries to grow a block without moving it.</summary>
    /// <returns><see langword="true"/> when the block now holds <paramref name="newSize"/> bytes at the same address; otherwise nothing changed.</returns>
    bool TryGrowInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>Tries to shrink a block without moving it.</summary>
    /// <returns><see langword="true"/> when the block now holds <paramref name="newSize"/> bytes at the same address; otherwise nothing changed.</returns>
    bool TryShrinkInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>
    /// The number of bytes a request of <paramref name="size"/> bytes really receives (its
    /// excess size): a caller may use and later free the block with any size between
    /// <paramref name="size"/> and this value.
    /// </summary>
    nuint GetUsableSize(nuint size, nuint alignment);

    /// <summary>Whether <paramref name="pointer"/> lies in memory this allocator hands out.</summary>
    /// <remarks>For region allocators this is a cheap range test; it does not say the block is live.</remarks>
    bool Owns(byte* pointer);

    /// <summary>A snapshot of the allocator's counters.</summary>
    AllocatorStatistics Statistics { get; }
}
