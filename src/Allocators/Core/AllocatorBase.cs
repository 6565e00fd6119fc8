using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting.Allocators;

/// <summary>
/// Implements the argument rules, zero-size handling and exceptions of <see cref="IAllocator"/>
/// once, so that a concrete allocator only writes its algorithm (the <c>…Core</c> members).
/// </summary>
/// <remarks>
/// <para>
/// The public members validate their arguments, handle zero sizes and the sentinel, convert
/// exhaustion into <see cref="AllocatorExhaustedException"/> and count failures; they then call
/// the protected core members with non-zero sizes, non-null pointers and valid alignments.
/// A core member reports exhaustion by returning <see langword="null"/> (or
/// <see langword="false"/>) and must leave the allocator unchanged when it does, or when it
/// throws for a pointer it does not own or a block already free.
/// </para>
/// <para>
/// The public members are small and non-virtual, so that calls through a sealed derived type
/// inline and devirtualise the core call: <see cref="Allocate"/>, <see cref="TryAllocate"/> and
/// <see cref="Deallocate"/> are the fast paths, and failures leave them through
/// never-inlined throw and count helpers.
/// </para>
/// <para>
/// <b>Disposal.</b> Once <see cref="Dispose()"/> has run, every member that allocates, frees or
/// resizes throws <see cref="ObjectDisposedException"/>, the <c>Try</c> forms included (disposal is
/// misuse, not exhaustion); <see cref="IAllocator.Owns"/> returns <see langword="false"/>, and
/// <see cref="Statistics"/> and <see cref="GetUsableSize"/> keep answering. Zero-byte requests and
/// frees, which never reach the allocator, still return or accept the sentinel. To keep the fast
/// paths free of a disposed check, a derived type makes its own state refuse everything on
/// disposal (an empty range, no free block, an empty table) and the refusal paths
/// (exhaustion here, a foreign pointer in the derived type) then name the disposal; the other
/// members check <see cref="IsDisposed"/> first. A type whose instances are shared and stay usable
/// after <see cref="Dispose()"/> says so by overriding <see cref="RemainsUsableAfterDispose"/>.
/// </para>
/// </remarks>
public abstract unsafe class AllocatorBase : IAllocator, IDisposable
{
    private long _failures;
    private int _disposed;

    /// <summary>The name used in exception messages: the type name unless overridden.</summary>
    protected virtual string Name => GetType().Name;

    /// <summary>Whether <see cref="Dispose()"/> has run and the allocator refuses further use.</summary>
    protected bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>
    /// Whether the allocator stays usable after <see cref="Dispose()"/> (a shared instance that owns
    /// nothing to release, such as an untracked <see cref="NativeMemoryAllocator"/>); by default
    /// <see langword="false"/>: a disposed allocator refuses every use with <see cref="ObjectDisposedException"/>.
    /// </summary>
    protected virtual bool RemainsUsableAfterDispose => false;

    /// <summary>Requests this allocator refused because it was exhausted.</summary>
    protected long FailureCount => Volatile.Read(ref _failures);

    /// <inheritdoc />
    public abstract AllocatorStatistics Statistics { get; }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* Allocate(nuint size, nuint alignment)
    {
        Allocator.ValidateRequest(size, alignment);
        if (size == 0)
        {
            return Allocator.ZeroSizeSentinel;
        }

        byte* pointer = AllocateCore(size, alignment);
        if (pointer == null)
        {
            ThrowExhausted(size, alignment);
        }

        return pointer;
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAllocate(nuint size, nuint alignment, out byte* pointer)
    {
        Allocator.ValidateRequest(size, alignment);
        if (size == 0)
        {
            pointer = Allocator.ZeroSizeSentinel;
            return true;
        }

        pointer = AllocateCore(size, alignment);
        if (pointer == null)
        {
            TryAllocateFailedSlow();
            return false;
        }

        return true;
    }

    /// <inheritdoc />
    public byte* AllocateZeroed(nuint size, nuint alignment)
    {
        byte* pointer = Allocate(size, alignment);
        if (size != 0)
        {
            NativeMemory.Clear(pointer, size);
        }

        return pointer;
    }

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Deallocate(byte* pointer, nuint size, nuint alignment)
    {
        if (!Allocator.IsValidAlignment(alignment))
        {
            Allocator.ThrowInvalidAlignment(alignment);
        }

        if (size == 0)
        {
            ValidateZeroSizePointer(pointer);
            return;
        }

        if (pointer == null)
        {
            Allocator.ThrowNullPointer();
        }

        DeallocateCore(pointer, size, alignment);
    }

    /// <inheritdoc />
    public byte* GrowingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (!TryGrowingReallocate(pointer, currentSize, newSize, alignment, out byte* result))
        {
            ThrowExhaustedNoCount(newSize, alignment);
        }

        return result;
    }

    /// <inheritdoc />
    public bool TryGrowingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment, out byte* newPointer)
    {
        ThrowIfDisposed();
        Allocator.ValidateRequest(newSize, alignment);
        if (newSize <= currentSize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(newSize), newSize, $"A growing reallocation needs a new size larger than the current size ({currentSize}).");
        }

        if (currentSize == 0)
        {
            ValidateZeroSizePointer(pointer);
            return TryAllocate(newSize, alignment, out newPointer);
        }

        if (pointer == null)
        {
            Allocator.ThrowNullPointer();
        }

        newPointer = GrowCore(pointer, currentSize, newSize, alignment);
        if (newPointer == null)
        {
            RecordFailureSlow();
            return false;
        }

        return true;
    }

    /// <inheritdoc />
    public byte* ShrinkingReallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        ThrowIfDisposed();
        Allocator.ValidateRequest(currentSize, alignment);
        if (newSize == 0 || newSize >= currentSize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(newSize), newSize, $"A shrinking reallocation needs a new size between 1 and {currentSize - 1} (the current size minus one); use Reallocate or Deallocate to shrink to zero.");
        }

        if (pointer == null)
        {
            Allocator.ThrowNullPointer();
        }

        byte* result = ShrinkCore(pointer, currentSize, newSize, alignment);
        if (result == null)
        {
            ThrowExhausted(newSize, alignment);
        }

        return result;
    }

    /// <inheritdoc />
    public byte* Reallocate(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        ThrowIfDisposed();
        if (newSize == currentSize)
        {
            Allocator.ValidateRequest(newSize, alignment);
            return pointer;
        }

        if (newSize > currentSize)
        {
            return GrowingReallocate(pointer, currentSize, newSize, alignment);
        }

        if (newSize == 0)
        {
            Deallocate(pointer, currentSize, alignment);
            return Allocator.ZeroSizeSentinel;
        }

        return ShrinkingReallocate(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    public bool TryGrowInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        ThrowIfDisposed();
        Allocator.ValidateRequest(newSize, alignment);
        if (newSize < currentSize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(newSize), newSize, $"Growing in place needs a new size of at least the current size ({currentSize}).");
        }

        if (newSize == currentSize)
        {
            return true;
        }

        if (currentSize == 0)
        {
            return false;
        }

        if (pointer == null)
        {
            Allocator.ThrowNullPointer();
        }

        return TryGrowInPlaceCore(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    public bool TryShrinkInPlace(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        ThrowIfDisposed();
        Allocator.ValidateRequest(currentSize, alignment);
        if (newSize == 0 || newSize > currentSize)
        {
            throw new ArgumentOutOfRangeException(
                nameof(newSize), newSize, $"Shrinking in place needs a new size between 1 and the current size ({currentSize}).");
        }

        if (newSize == currentSize)
        {
            return true;
        }

        if (pointer == null)
        {
            Allocator.ThrowNullPointer();
        }

        return TryShrinkInPlaceCore(pointer, currentSize, newSize, alignment);
    }

    /// <inheritdoc />
    public nuint GetUsableSize(nuint size, nuint alignment)
    {
        Allocator.ValidateRequest(size, alignment);
        return size == 0 ? 0 : GetUsableSizeCore(size, alignment);
    }

    /// <inheritdoc />
    public abstract bool Owns(byte* pointer);

    /// <summary>Releases the allocator's memory. Every block it handed out becomes invalid, and further use throws <see cref="ObjectDisposedException"/> (see the type's remarks).</summary>
    public void Dispose()
    {
        if (!RemainsUsableAfterDispose)
        {
            Volatile.Write(ref _disposed, 1);
        }

        Dispose(disposing: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases the allocator's memory; <paramref name="disposing"/> is false when called from a finaliser.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <summary>Allocates <paramref name="size"/> (&gt; 0) bytes, or returns <see langword="null"/> when exhausted (leaving the allocator unchanged).</summary>
    protected abstract byte* AllocateCore(nuint size, nuint alignment);

    /// <summary>Frees a block; throws <see cref="ArgumentException"/> (leaving the allocator unchanged) for a pointer it does not own or, where it can tell, a block already free.</summary>
    protected abstract void DeallocateCore(byte* pointer, nuint size, nuint alignment);

    /// <summary>Grows a block in place (<see langword="true"/>) or leaves it untouched (<see langword="false"/>).</summary>
    protected abstract bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>Shrinks a block in place (<see langword="true"/>) or leaves it untouched (<see langword="false"/>).</summary>
    protected abstract bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment);

    /// <summary>The usable size of a request of <paramref name="size"/> (&gt; 0) bytes; by default exactly <paramref name="size"/>.</summary>
    protected virtual nuint GetUsableSizeCore(nuint size, nuint alignment) => size;

    /// <summary>
    /// Grows a block: in place when possible, otherwise allocate, copy, free. Returns
    /// <see langword="null"/> when there is no room, with the original block untouched.
    /// </summary>
    protected virtual byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (TryGrowInPlaceCore(pointer, currentSize, newSize, alignment))
        {
            return pointer;
        }

        return MoveBlock(pointer, currentSize, newSize, alignment);
    }

    /// <summary>
    /// Shrinks a block: in place when possible, otherwise allocate, copy, free. Returns
    /// <see langword="null"/> when there is no room, with the original block untouched.
    /// </summary>
    protected virtual byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (TryShrinkInPlaceCore(pointer, currentSize, newSize, alignment))
        {
            return pointer;
        }

        return MoveBlock(pointer, currentSize, newSize, alignment);
    }

    /// <summary>Moves a block to a new allocation of <paramref name="newSize"/> bytes: allocate first, copy, then free the old block.</summary>
    protected byte* MoveBlock(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        byte* moved = AllocateCore(newSize, alignment);
        if (moved == null)
        {
            return null;
        }

        NativeMemory.Copy(pointer, moved, Math.Min(currentSize, newSize));
        DeallocateCore(pointer, currentSize, alignment);
        return moved;
    }

    /// <summary>
    /// <see cref="Allocate"/> for wrappers in this assembly that validated the request already
    /// (size &gt; 0, valid alignment): the core allocation plus the failure count, without a second
    /// validation; <see langword="null"/> when exhausted. Called through a sealed type it inlines
    /// and devirtualises.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* AllocatePrevalidated(nuint size, nuint alignment)
    {
        byte* pointer = AllocateCore(size, alignment);
        if (pointer == null)
        {
            RecordFailureSlow();
        }

        return pointer;
    }

    /// <summary>
    /// <see cref="Deallocate"/> for wrappers in this assembly that validated the arguments already
    /// (size &gt; 0, non-null pointer, valid alignment).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void DeallocatePrevalidated(byte* pointer, nuint size, nuint alignment) =>
        DeallocateCore(pointer, size, alignment);

    /// <summary>Throws <see cref="ObjectDisposedException"/> once the allocator is disposed (for members off the fast paths).</summary>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(IsDisposed, this);

    /// <summary>Counts a refused request (cold path; safe from any thread).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    protected void RecordFailureSlow() => Interlocked.Increment(ref _failures);

    private static void ValidateZeroSizePointer(byte* pointer)
    {
        if (pointer != Allocator.ZeroSizeSentinel && pointer != null)
        {
            throw new ArgumentException(
                "A size of zero is only valid with Allocator.ZeroSizeSentinel (or null); pass the size the block was allocated with.",
                nameof(pointer));
        }
    }

    // A TryAllocate the core refused: disposal throws, exhaustion is counted.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TryAllocateFailedSlow()
    {
        ThrowIfDisposed();
        RecordFailureSlow();
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowExhausted(nuint size, nuint alignment)
    {
        ThrowIfDisposed();
        RecordFailureSlow();
        throw new AllocatorExhaustedException(Name, size, alignment);
    }

    /// <summary>
    /// Throws the <see cref="AllocatorExhaustedException"/> for a request of <paramref name="size"/>
    /// bytes at <paramref name="alignment"/>, without counting a failure (for callers that counted
    /// it already).
    /// </summary>
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    protected void ThrowExhaustedNoCount(nuint size, nuint alignment) =>
        throw new AllocatorExhaustedException(Name, size, alignment);
}
