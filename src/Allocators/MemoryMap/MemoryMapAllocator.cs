using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// An allocator that gives every block its own memory mapping from a <see cref="MemoryMapSource"/>
/// (with that source's NUMA policy, huge pages, advice and locking) and resizes blocks with
/// <c>mremap</c>. Thread-safe.
/// </summary>
/// <remarks>
/// <para>
/// Slow (every call is a system call) but it returns memory to the kernel at once, places it on
/// the NUMA nodes the policy names, and grows large buffers without copying: the kernel moves page
/// tables instead of bytes. Use it for large, long-lived or rarely resized buffers, or as the
/// global allocator of last resort; not for small objects.
/// </para>
/// <para>
/// A block's usable size is its size rounded up to the source's granularity (a page or a huge
/// page). Alignments up to the granularity are free; larger ones (up to
/// <see cref="Allocator.MaximumAlignment"/>) map <c>alignment - granularity</c> extra bytes and
/// unmap the unaligned head and tail, and such blocks keep their alignment when they move on
/// growth (by mapping a new aligned block and copying, since <c>mremap</c> only keeps page alignment).
/// </para>
/// <para>
/// It keeps the address and mapped size of every live block, so foreign pointers and double frees
/// are detected (with <see cref="ArgumentException"/>, nothing changed); the seed unmapped whatever
/// it was given. <see cref="AllocatorBase.Dispose()"/> unmaps every block still live; there is no
/// finaliser, so an undisposed allocator leaves its blocks mapped.
/// </para>
/// <para>
/// <see cref="Owns"/> finds a block's start in O(1) and an interior address by scanning the live
/// blocks. A <see cref="SwitchableAllocator"/> whose thread-local allocator falls back to a
/// <see cref="MemoryMapAllocator"/> asks it about the pointers no registered allocator owns. The
/// <see cref="ThreadLocalAllocator"/>'s own default fallback instead registers every mapping in the
/// process-wide owner registry (page-aligned mappings share no 4 KiB granule with other memory), so
/// that routing its blocks costs nothing extra; registration costs a table entry per 4 KiB of the
/// mapping, which is why other instances do not register.
/// </para>
/// <example><code>
/// using var allocator = new MemoryMapAllocator();
/// byte* buffer = allocator.Allocate(1 &lt;&lt; 20, 64);
/// buffer = allocator.GrowingReallocate(buffer, 1 &lt;&lt; 20, 8 &lt;&lt; 20, 64);   // mremap, no copy
/// allocator.Deallocate(buffer, 8 &lt;&lt; 20, 64);
/// </code></example>
/// </remarks>
public sealed unsafe class MemoryMapAllocator : AllocatorBase
{
    // Every live block: its address and its mapped size (the request rounded up to the granularity),
    // kept for size validation; guarded by _liveLock, which is never held across a system call. A
    // block leaves the table before it is unmapped or moved, so an address the kernel hands out again
    // is never still in the table. Invariant (outside an operation on the block): the OwnerRegistry
    // names this allocator as owner of exactly the granules of the live blocks; a range leaves the
    // registry before it is unmapped or moved, for the same reason.
    private readonly LiveBlockTable<MappedBlock> _live = new(nameof(MemoryMapAllocator));
    private readonly Lock _liveLock = new();

    // Counters, all Interlocked; bytes in use counts mapped (page-rounded) bytes.
    private readonly AtomicAllocatorCounters _counters = new();
    private int _disposed;

    /// <summary>Creates an allocator over a new <see cref="MemoryMapSource"/> with <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    /// <exception cref="PlatformNotSupportedException">Memory mapping is not supported here (see <see cref="IsSupported"/>).</exception>
    public MemoryMapAllocator(MemoryMapSourceOptions? options = null)
        : this(new MemoryMapSource(options))
    {
    }

    /// <summary>Creates an allocator whose blocks come from <paramref name="source"/> (which may be shared).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="source"/> is null.</exception>
    public MemoryMapAllocator(MemoryMapSource source)
        : this(source, registerBlocks: false)
    {
    }

    /// <summary>An allocator that registers its mappings in the owner registry (the thread-local allocator's default fallback).</summary>
    internal MemoryMapAllocator(MemoryMapSource source, bool registerBlocks)
    {
        ArgumentNullException.ThrowIfNull(source);
        Source = source;
        RegistersBlocks = registerBlocks;
    }

    /// <summary>Whether every live mapping is registered in the owner registry with this allocator as owner.</summary>
    internal bool RegistersBlocks { get; }

    /// <summary>Whether this process can use the allocator (the same as <see cref="MemoryMapSource.IsSupported"/>).</summary>
    public static bool IsSupported => MemoryMapSource.IsSupported;

    /// <summary>The source every block is mapped from.</summary>
    public MemoryMapSource Source { get; }

    /// <summary>The unit block sizes are rounded up to: the source's page or huge page size.</summary>
    public nuint Granularity => Source.Granularity;

    /// <summary>The number of blocks allocated and not yet freed.</summary>
    public int LiveBlockCount
    {
        get
        {
            lock (_liveLock)
            {
                return _live.Count;
            }
        }
    }

    /// <inheritdoc />
    /// <remarks>Counted on per-processor stripes, like <see cref="NativeMemoryAllocator"/>'s: the peak is exact while all the updates came from one processor, and otherwise the largest bytes-in-use sampled.</remarks>
    public override AllocatorStatistics Statistics => _counters.ToStatistics(null, FailureCount);

    /// <inheritdoc />
    /// <remarks>True for any address inside a live block (its whole mapping): the start of a block is found in O(1) (one owner-registry lookup when the allocator registers its blocks), an interior address otherwise by scanning the live blocks.</remarks>
    public override bool Owns(byte* pointer)
    {
        nuint address = (nuint)pointer;
        if (RegistersBlocks)
        {
            return ReferenceEquals(OwnerRegistry.Find(address), this);
        }

        lock (_liveLock)
        {
            return _live.Contains(pointer) || _live.ContainsInterior(address, static block => block.Mapped);
        }
    }

    /// <inheritdoc />
    protected override byte* AllocateCore(nuint size, nuint alignment)
    {
        ThrowIfDisposed();
        nuint mapAlignment = Math.Max(alignment, Granularity);
        if (!IsMappable(size, mapAlignment) || !Source.TryObtainAligned(size, mapAlignment, out byte* block))
        {
            return null;
        }

        nuint mapped = Allocator.AlignUp(size, Granularity);
        RegisterOrRelease(block, mapped);
        Track(block, mapped);
        _counters.Allocated(size, mapped);
        return block;
    }

    /// <inheritdoc />
    protected override void DeallocateCore(byte* pointer, nuint size, nuint alignment)
    {
        ThrowIfDisposed();
        nuint mapped = Untrack(pointer, size);

        // Out of the registry before the unmap: afterwards the kernel may hand the range to anyone.
        Unregister((nuint)pointer, mapped);
        Source.Release(pointer, mapped);
        _counters.Freed(mapped);
    }

    /// <inheritdoc />
    protected override nuint GetUsableSizeCore(nuint size, nuint alignment) => Allocator.AlignUp(size, Granularity);

    /// <inheritdoc />
    protected override bool TryGrowInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        ThrowIfDisposed();
        nuint mapped = LookUp(pointer, currentSize);
        nuint newMapped = Allocator.AlignUp(newSize, Granularity);
        if (newMapped <= mapped)
        {
            return true;
        }

        return IsMappable(newSize, Granularity) && ResizeInPlace(pointer, mapped, newMapped);
    }

    /// <inheritdoc />
    protected override bool TryShrinkInPlaceCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        ThrowIfDisposed();
        nuint mapped = LookUp(pointer, currentSize);
        nuint newMapped = Allocator.AlignUp(newSize, Granularity);
        return newMapped == mapped || ResizeInPlace(pointer, mapped, newMapped);
    }

    /// <inheritdoc />
    /// <remarks>
    /// Within the usable size nothing happens; beyond it <c>mremap</c> may move the block (page-aligned
    /// blocks) or a new aligned block is mapped and filled (larger alignments). Should the grown mapping
    /// overlap memory still registered to another allocator in the owner registry (that allocator's
    /// bug), the block is unmapped and the registry's <see cref="InvalidOperationException"/> passed on.
    /// </remarks>
    protected override byte* GrowCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        ThrowIfDisposed();
        nuint mapped = LookUp(pointer, currentSize);
        nuint newMapped = Allocator.AlignUp(newSize, Granularity);
        if (newMapped <= mapped)
        {
            return pointer;
        }

        if (!IsMappable(newSize, Math.Max(alignment, Granularity)))
        {
            // No mapping can be that large: exhaustion (a Try form returns false), the block untouched.
            return null;
        }

        if (alignment > Granularity)
        {
            // Resize in place, else map a new aligned block and copy: the base class's grow.
            return base.GrowCore(pointer, currentSize, newSize, alignment);
        }

        // Out of the table and the registry first: once mremap moves the block the kernel may hand its
        // old address to another thread (or to this allocator, which would register it again).
        // A refusal, or an exception, leaves the block where it was: it goes back into the table and
        // the registry (still mapped and ours, so registering it again cannot conflict), so that a
        // failed grow never loses a live block or leaks its mapping.
        mapped = Untrack(pointer, currentSize);
        Unregister((nuint)pointer, mapped);
        bool remapped;
        byte* moved;
        try
        {
            remapped = Source.TryRemap(pointer, mapped, newMapped, out moved);
        }
        catch
        {
            Restore(pointer, mapped);
            throw;
        }

        if (!remapped)
        {
            Restore(pointer, mapped);
            return null;
        }

        try
        {
            RegisterOrRelease(moved, newMapped);
        }
        catch
        {
            _counters.Freed(mapped);
            throw;
        }

        Track(moved, newMapped);
        if (moved != pointer)
        {
            _counters.Moved(newSize);
        }

        _counters.Resized((long)newMapped - (long)mapped);
        return moved;
    }

    /// <inheritdoc />
    /// <remarks>
    /// Shrinking always keeps the address: the tail pages are unmapped. Should the kernel refuse
    /// (<c>mremap</c> can fail with ENOMEM when splitting the mapping would exceed
    /// <c>vm.max_map_count</c>), the block simply keeps its pages: a shrink never fails, and the block,
    /// still recorded with its old mapping, is freed or grown as usual.
    /// </remarks>
    protected override byte* ShrinkCore(byte* pointer, nuint currentSize, nuint newSize, nuint alignment)
    {
        _ = TryShrinkInPlaceCore(pointer, currentSize, newSize, alignment);
        return pointer;
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        KeyValuePair<nuint, MappedBlock>[] live;
        lock (_liveLock)
        {
            live = _live.RemoveAll();
        }

        foreach (var (address, block) in live)
        {
            Unregister(address, block.Mapped);
            Source.Release((byte*)address, block.Mapped);
            _counters.Freed(block.Mapped);   // a deallocation, as NativeMemoryAllocator counts its blocks freed on dispose
        }

        base.Dispose(disposing);
    }

    private bool ResizeInPlace(byte* pointer, nuint mapped, nuint newMapped)
    {
        if (newMapped < mapped)
        {
            // The tail leaves the registry before it is unmapped: afterwards the kernel may hand it to anyone.
            nuint tail = (nuint)pointer + newMapped;
            Unregister(tail, mapped - newMapped);
            if (!Source.TryResizeInPlace(pointer, mapped, newMapped))
            {
                Register(tail, mapped - newMapped);
                return false;
            }
        }
        else
        {
            if (!Source.TryResizeInPlace(pointer, mapped, newMapped))
            {
                return false;
            }

            try
            {
                Register((nuint)pointer + mapped, newMapped - mapped);
            }
            catch
            {
                // Shrinking always succeeds: the block is as it was, and the failure is reported.
                _ = Source.TryResizeInPlace(pointer, newMapped, mapped);
                throw;
            }
        }

        Track(pointer, newMapped);
        _counters.Resized((long)newMapped - (long)mapped);
        return true;
    }

    // Whether a block of size bytes at alignment (at least the granularity) can be mapped at all: its
    // rounded size plus the slack an over-aligned mapping needs stays within Allocator.MaximumSize.
    // A size beyond that is exhaustion, not bad input: the Try forms return false for it.
    private bool IsMappable(nuint size, nuint alignment)
    {
        nuint slack = alignment - Granularity;
        return Allocator.AlignUp(size, Granularity) <= Allocator.MaximumSize - slack;
    }

    // Puts a block that a failed grow took out of the table back, with its registration.
    private void Restore(byte* pointer, nuint mapped)
    {
        Register((nuint)pointer, mapped);
        Track(pointer, mapped);
    }

    private void Register(nuint start, nuint length)
    {
        if (RegistersBlocks)
        {
            OwnerRegistry.Register(start, length, this);
        }
    }

    private void Unregister(nuint start, nuint length)
    {
        if (RegistersBlocks)
        {
            OwnerRegistry.Unregister(start, length, this);
        }
    }

    // Registers a mapping the kernel just handed out. When part of it is still registered to another
    // owner (a stale registration: that owner's bug) the mapping is unmapped and the exception passed
    // on, so that neither a mapping nor a registration leaks.
    private void RegisterOrRelease(byte* block, nuint mapped)
    {
        try
        {
            Register((nuint)block, mapped);
        }
        catch
        {
            Source.Release(block, mapped);
            throw;
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> unless <paramref name="pointer"/> is a live block that <paramref name="size"/> fits (for a caller that must check before it acts, such as a thread-local allocator moving the block into a slab).</summary>
    internal void ValidateLive(byte* pointer, nuint size)
    {
        ThrowIfDisposed();
        _ = LookUp(pointer, size);
    }

    // The mapped size of the live block at pointer; throws when there is none or size exceeds it.
    private nuint LookUp(byte* pointer, nuint size)
    {
        lock (_liveLock)
        {
            return _live.Find(pointer, size, alignment: 0).Mapped;
        }
    }

    // Takes the live block at pointer out of the table and returns its mapped size; throws like LookUp.
    private nuint Untrack(byte* pointer, nuint size)
    {
        lock (_liveLock)
        {
            return _live.Remove(pointer, size, alignment: 0).Mapped;
        }
    }

    private void Track(byte* pointer, nuint mapped)
    {
        lock (_liveLock)
        {
            _live.Set(pointer, new MappedBlock(mapped));
        }
    }

    // A live block's mapped size. Any size up to it names the block (a caller passes the size it asked
    // for, not the rounded one, and a ThreadLocalAllocator maps a slab-sized request that falls back
    // with its class's size but frees it with the size asked for), and any alignment: the block's
    // address is what keeps that. Harmless: frees and resizes act on the mapped size of the table.
    private readonly record struct MappedBlock(nuint Mapped) : ILiveBlock
    {
        public bool Fits(nuint size, nuint alignment) => size <= Mapped;

        [DoesNotReturn]
        [MethodImpl(MethodImplOptions.NoInlining)]
        public void ThrowMismatch(void* pointer, nuint size, nuint alignment) =>
            throw new ArgumentException(
                $"The block at 0x{(nuint)pointer:X} holds {Mapped} bytes in this {nameof(MemoryMapAllocator)}, fewer than the size {size} given for it.",
                nameof(pointer));
    }
}
