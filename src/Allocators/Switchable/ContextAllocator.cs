using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>
/// One allocator for a context (an async flow such as a request), chosen by how long the
/// context lives: the seed's closed sum type over the bump, bit set and tree allocators.
/// </summary>
/// <remarks>
/// <para>
/// The wrapped allocator is held in a field of its concrete sealed type, and allocation, free and
/// growth switch on <see cref="Kind"/>, so those calls are direct (no interface dispatch); the
/// other members call it through its base class.
/// Every <see cref="IAllocator"/> member, <see cref="Range"/>, <see cref="Reset"/> and
/// <see cref="Statistics"/> are those of the wrapped allocator; disposing the context
/// allocator disposes it.
/// </para>
/// <example>
/// <code>
/// using var context = ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, 64 * 1024));
/// byte* buffer = context.Allocate(1024, 8);
/// context.Reset();
/// </code>
/// </example>
/// <para>It never grows its region. Like the allocators it wraps it is not thread-safe, except in the
/// thread-safe forms of the factories (<c>ShortLived(allocator, threadSafe: true)</c>, or a
/// <see cref="Lock"/> given to <c>MediumLived</c>/<c>LongLived</c>): see <see cref="IsThreadSafe"/>.</para>
/// </remarks>
public sealed unsafe class ContextAllocator : AllocatorBase, IRegionAllocator
{
    // Exactly one of the typed fields is set, the one Kind names; it never changes. The hot members
    // (allocate, free, grow) switch on the kind so that their calls are direct; the others go through
    // _inner, the same allocator as its base type.
    private readonly ContextAllocatorKind _kind;
    private readonly BumpAllocator? _bump;
    private readonly BitSetAllocator? _bitSet;
    private readonly MultipleBinarySearchTreeAllocator? _tree;
    private readonly AllocatorBase _inner;

    // Thread-safe variants (see IsThreadSafe): a bump context allocates only through the bump
    // allocator's lock-free concurrent path, so its "most recent" block is never set and no
    // other member writes the offset; a bit set or tree context holds _lock (or, for an arena chunk's
    // bit set, the chunk's _spin) around every call.
    private readonly bool _concurrentBump;
    private readonly Lock? _lock;

    // Instead of _lock, for a bit set context that shares its arena chunk's lock (see SharedSpinLock).
    private readonly SharedSpinLock? _spin;

    // Whether Range is registered to this allocator in OwnerRegistry (done by SwitchableAllocator
    // when it first installs the allocator, undone by Dispose), so that frees are routed here from
    // any flow and any thread. Registering twice is harmless (same owner).
    private volatile bool _registered;

    // The use the wrapped allocator's blocks belong to, for holders that must tell whether their
    // block is still theirs (NativeList): advanced by Reset and Dispose and, for an arena chunk's
    // context, when the chunk's use ends and again just before its memory serves another use.
    // Written by one thread at a time (whoever resets; a chunk's owner), read by any; for the locked
    // forms it is advanced under the lock wherever the wrapped allocator is reset under it.
    private int _generation;

    private ContextAllocator(BumpAllocator bump, bool concurrent)
    {
        _kind = ContextAllocatorKind.ShortLived;
        _bump = bump;
        _inner = bump;
        _concurrentBump = concurrent;
    }

    private ContextAllocator(BitSetAllocator bitSet, Lock? synchronizeWith, SharedSpinLock? spin = null)
    {
        _kind = ContextAllocatorKind.MediumLived;
        _bitSet = bitSet;
        _inner = bitSet;
        _lock = synchronizeWith;
        _spin = spin;
    }

    private ContextAllocator(MultipleBinarySearchTreeAllocator tree, Lock? synchronizeWith)
    {
        _kind = ContextAllocatorKind.LongLived;
        _tree = tree;
        _inner = tree;
        _lock = synchronizeWith;
    }

    /// <summary>
    /// Whether every <see cref="IAllocator"/> member may run on several threads at once (the tasks
    /// of one request fanning out): true for the factories' thread-safe forms. <see cref="Reset"/>
    /// and <see cref="AllocatorBase.Dispose()"/> are never thread-safe.
    /// </summary>
    public bool IsThreadSafe => _concurrentBump || Synchronized;

    // Whether every call holds a lock (_lock or _spin).
    private bool Synchronized => _lock is not null || _spin is not null;

    /// <summary>Which allocator is wrapped.</summary>
    public ContextAllocatorKind Kind => _kind;

    /// <summary>The wrapped allocator.</summary>
    public IAllocator Inner => _inner;

    /// <summary>The region of the wrapped allocator.</summary>
    public MemoryRange Range => ((IRegionAllocator)_inner).Range;

    /// <summary>The statistics of the wrapped allocator (its failure count included).</summary>
    public override AllocatorStatistics Statistics => _inner.Statistics;

    /// <inheritdoc />
    protected override string Name => $"{nameof(ContextAllocator)}({_kind})";

    /// <summary>Wraps a bump allocator for short-lived contexts; the context allocator takes ownership of it.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    public static ContextAllocator ShortLived(BumpAllocator allocator) => ShortLived(allocator, threadSafe: false);

    /// <summary>
    /// Wraps a bump allocator for short-lived contexts; with <paramref name="threadSafe"/> every
    /// allocation goes through <see cref="BumpAllocator.TryAllocateConcurrent"/>, so the context may
    /// be used from several threads at once and beside other concurrent-path users of the same bump
    /// allocator. The price: no block is ever "most recent", so frees never rewind and growth always
    /// copies (the space of freed and moved blocks comes back at <see cref="Reset"/>).
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    public static ContextAllocator ShortLived(BumpAllocator allocator, bool threadSafe)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        return new ContextAllocator(allocator, threadSafe);
    }

    /// <summary>Wraps a bit set allocator for medium-lived contexts; the context allocator takes ownership of it.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    public static ContextAllocator MediumLived(BitSetAllocator allocator) => MediumLived(allocator, synchronizeWith: null);

    /// <summary>
    /// Wraps a bit set allocator for medium-lived contexts; when <paramref name="synchronizeWith"/>
    /// is given every call holds that lock, so the context is thread-safe and can share the bit
    /// set with other code that takes the same lock.
    /// </summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    public static ContextAllocator MediumLived(BitSetAllocator allocator, Lock? synchronizeWith)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        return new ContextAllocator(allocator, synchronizeWith);
    }

    /// <summary>A thread-safe bit set context that holds <paramref name="spin"/> around every call: an arena chunk's, sharing the chunk's lock.</summary>
    internal static ContextAllocator MediumLived(BitSetAllocator allocator, SharedSpinLock spin) => new(allocator, null, spin);

    /// <summary>Wraps a red-black-tree free-list allocator for long-lived contexts; the context allocator takes ownership of it.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    public static ContextAllocator LongLived(MultipleBinarySearchTreeAllocator allocator) => LongLived(allocator, synchronizeWith: null);

    /// <summary>Wraps a tree allocator for long-lived contexts; when <paramref name="synchronizeWith"/> is given every call holds that lock (thread-safe).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="allocator"/> is null.</exception>
    public static ContextAllocator LongLived(MultipleBinarySearchTreeAllocator allocator, Lock? synchronizeWith)
    {
        ArgumentNullException.ThrowIfNull(allocator);
        return new ContextAllocator(allocator, synchronizeWith);
    }

    /// <summary>Releases every block of the wrapped allocator at once.</summary>
    /// <remarks>A <see cref="NativeList{T}"/> whose block was here behaves as disposed from now on: its memory went with this reset.</remarks>
    /// <exception cref="ObjectDisposedException">The allocator was disposed.</exception>
    public void Reset()
    {
        ThrowIfDisposed();
        AdvanceGeneration();
        switch (_kind)
        {
            case ContextAllocatorKind.ShortLived:
                _bump!.Reset();
                break;
            case ContextAllocatorKind.MediumLived:
                _bitSet!.Reset();
                break;
            case ContextAllocatorKind.LongLived:
                _tree!.Reset();
                break;
            default:
                ThrowUnsupportedKind();
                break;
        }
    }

    /// <inheritdoc />
    public override bool Owns(byte* pointer) => _inner.Owns(pointer);

    /// <summary>The use the blocks handed out now belong to; a block recorded with another value went back with an ended use (see <see cref="AdvanceGeneration"/>).</summary>
    internal int Generation => Volatile.Read(ref _generation);

    /// <summary>
    /// Ends the current use for holders of its blocks: a block recorded with the previous
    /// <see cref="Generation"/> is no longer its holder's. Called by <see cref="Reset"/> and
    /// <see cref="Dispose(bool)"/>, and by an <see cref="ArenaChunk"/> when its use ends and before its next one.
    /// One thread at a time.
    /// </summary>
    internal void AdvanceGeneration() => Volatile.Write(ref _generation, _generation + 1);

    /// <summary>
    /// Frees the block when it still belongs to the use of <paramref name="generation"/>, else does
    /// nothing (it went back with its use, and its memory may serve another one by now). For the
    /// locked forms the check and the free are one step under the lock, so a free racing with the
    /// end of the use never releases a block of the next.
    /// </summary>
    /// <returns>Whether the block was freed.</returns>
    internal bool DeallocateInGeneration(int generation, byte* pointer, nuint size, nuint alignment)
    {
        if (!Synchronized)
        {
            return DeallocateUnlockedInGeneration(generation, pointer, size, alignment);
        }

        using (Hold())
        {
            return DeallocateUnlockedInGeneration(generation, pointer, size, alignment);
        }
    }

    private bool DeallocateUnlockedInGeneration(int generation, byte* pointer, nuint size, nuint alignment)
    {
        if (Generation != generation)
        {
            return false;
        }

        DeallocateUnlocked(pointer, size, alignment);
        return true;
    }

    // The core members: straight to the wrapped allocator, or under the shared lock for the
    // synchronised bit set and tree forms.

    /// <inheritdoc />
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        if (!Synchronized)
        {
            return AllocateUnlocked(size, alignment);
        }

        using (Hold())
        {
            return AllocateUnlocked(size, alignment);
        }
    }

    /// <inheritdoc />
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        if (!Synchronized)
        {
            DeallocateUnlocked(pointer, size, alignment);
            return;
        }

        using (Hold())
        {
            DeallocateUnlocked(pointer, size, alignment);
        }
    }

    /// <inheritdoc />
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (!Synchronized)
        {
            return GrowUnlocked(pointer, currentSize, newSize, alignment);
        }

        using (Hold())
        {
            return GrowUnlocked(pointer, currentSize, newSize, alignment);
        }
    }

    /// <inheritdoc />
    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (!Synchronized)
        {
            return ShrinkUnlocked(pointer, currentSize, newSize, alignment);
        }

        using (Hold())
        {
            return ShrinkUnlocked(pointer, currentSize, newSize, alignment);
        }
    }

    /// <inheritdoc />
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (!Synchronized)
        {
            return TryGrowInPlaceUnlocked(pointer, currentSize, newSize, alignment);
        }

        using (Hold())
        {
            return TryGrowInPlaceUnlocked(pointer, currentSize, newSize, alignment);
        }
    }

    /// <inheritdoc />
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        if (!Synchronized)
        {
            return TryShrinkInPlaceUnlocked(pointer, currentSize, newSize, alignment);
        }

        using (Hold())
        {
            return TryShrinkInPlaceUnlocked(pointer, currentSize, newSize, alignment);
        }
    }

    // Allocation and deallocation forward to the wrapped allocator's prevalidated entry points
    // (the base class validated the request already); the other core members forward to its
    // public members (its core members are protected). The wrapped allocator counts its own
    // failures and Statistics reports its counters only, so this wrapper's failure counter
    // (bumped by the base class when a core member returns null) never shows up twice.

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* AllocateUnlocked(nuint size, nuint alignment)
    {
        switch (_kind)
        {
            case ContextAllocatorKind.ShortLived when _concurrentBump:
                _bump!.TryAllocateConcurrentPrevalidated(size, alignment, out byte* concurrent);   // AllocatorBase validated it
                return concurrent;
            case ContextAllocatorKind.ShortLived:
                // Skips the second validation of the request: the base class did it.
                return _bump!.AllocatePrevalidated(size, alignment);
            case ContextAllocatorKind.MediumLived:
                return _bitSet!.AllocatePrevalidated(size, alignment);
            case ContextAllocatorKind.LongLived:
                return _tree!.AllocatePrevalidated(size, alignment);
            default:
                ThrowUnsupportedKind();
                return null;
        }
    }

    private void DeallocateUnlocked(byte* pointer, nuint size, nuint alignment)
    {
        switch (_kind)
        {
            case ContextAllocatorKind.ShortLived when _concurrentBump:
                // Frees run on many threads at once: counted atomically, never rewinding.
                _bump!.DeallocateConcurrentPrevalidated(pointer, size);
                break;
            case ContextAllocatorKind.ShortLived:
                _bump!.DeallocatePrevalidated(pointer, size, alignment);
                break;
            case ContextAllocatorKind.MediumLived:
                _bitSet!.DeallocatePrevalidated(pointer, size, alignment);
                break;
            case ContextAllocatorKind.LongLived:
                _tree!.DeallocatePrevalidated(pointer, size, alignment);
                break;
            default:
                ThrowUnsupportedKind();
                break;
        }
    }

    private byte* GrowUnlocked(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        byte* moved;
        switch (_kind)
        {
            case ContextAllocatorKind.ShortLived when _concurrentBump:
                // The bump allocator's own growth would use its single-threaded path: grow in place
                // (never possible, no block is most recent) or move through this allocator's
                // concurrent allocate and free (the old block's space returns at Reset).
                return base.GrowCore(pointer, currentSize, newSize, alignment);
            case ContextAllocatorKind.ShortLived:
                _bump!.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out moved);
                return moved;
            case ContextAllocatorKind.MediumLived:
                _bitSet!.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out moved);
                return moved;
            case ContextAllocatorKind.LongLived:
                _tree!.TryGrowingReallocate(pointer, currentSize, newSize, alignment, out moved);
                return moved;
            default:
                ThrowUnsupportedKind();
                return null;
        }
    }

    // The wrapped allocator throws (and counts) itself if it cannot shrink.
    private byte* ShrinkUnlocked(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        _inner.ShrinkingReallocate(pointer, currentSize, newSize, alignment);

    private bool TryGrowInPlaceUnlocked(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        _inner.TryGrowInPlace(pointer, currentSize, newSize, alignment);

    private bool TryShrinkInPlaceUnlocked(byte* pointer, nuint currentSize, nuint newSize, nuint alignment) =>
        _inner.TryShrinkInPlace(pointer, currentSize, newSize, alignment);

    /// <inheritdoc />
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment) => _inner.GetUsableSize(size, alignment);

    /// <summary>
    /// Registers <see cref="Range"/> as this allocator's in <see cref="OwnerRegistry"/> unless it already is;
    /// <see cref="Dispose(bool)"/> unregisters it.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The allocator was disposed (its range is empty).</exception>
    /// <exception cref="InvalidOperationException">The range shares a 4 KiB granule with memory another owner registered.</exception>
    internal void EnsureRegistered()
    {
        if (_registered)
        {
            return;
        }

        MemoryRange range = Range;
        ObjectDisposedException.ThrowIf(range.Length == 0, this);
        OwnerRegistry.Register(range.From, range.Length, this);
        _registered = true;
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            AdvanceGeneration();
            if (_registered)
            {
                MemoryRange range = Range;
                OwnerRegistry.Unregister(range.From, range.Length, this);
                _registered = false;
            }

            _inner.Dispose();
        }

        base.Dispose(disposing);
    }

    // Takes the lock of a synchronised form (_spin or _lock) until the hold is disposed.
    private Held Hold() => new(_lock, _spin);

    private ref struct Held
    {
        private readonly SharedSpinLock? _spin;
        private Lock.Scope _scope;

        public Held(Lock? lockObject, SharedSpinLock? spin)
        {
            _spin = spin;
            if (spin is not null)
            {
                spin.Enter();
            }
            else
            {
                _scope = lockObject!.EnterScope();
            }
        }

        public void Dispose()
        {
            if (_spin is not null)
            {
                _spin.Exit();
            }
            else
            {
                _scope.Dispose();
            }
        }
    }

    // Unreachable: the factories only create the three kinds handled above.
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowUnsupportedKind() =>
        throw new NotSupportedException($"{nameof(ContextAllocator)} has an unknown kind {_kind}.");

}
