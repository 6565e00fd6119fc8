using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;
using static AllocHosting.Allocators.Interop.LinuxConstants;

namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// A memory source that maps every region straight from the Linux kernel (<c>mmap</c>), optionally
/// placed on NUMA nodes, advised, populated and locked: the backing store of arenas, thread-local
/// allocators and <see cref="MemoryMapAllocator"/>. Thread-safe.
/// </summary>
/// <remarks>
/// <para>
/// Obtaining a region runs, in this order: <c>mmap</c> (private, anonymous, never
/// <c>MAP_LOCKED</c> or <c>MAP_POPULATE</c>) → one <c>madvise</c> per advice → <c>mbind</c> with
/// the <see cref="MemoryMapSourceOptions.NumaPolicy"/> → populate (<see cref="MemoryMapSourceOptions.Prefault"/>)
/// → <c>mlock</c> (<see cref="MemoryMapSourceOptions.Lock"/>). Placing pages before they are first
/// touched is what makes the policy effective (the seed populated first). When a required step fails
/// the region is unmapped and the request fails with the kernel's error:
/// <see cref="TryObtain"/> returns <see langword="false"/> and <see cref="Obtain"/> throws
/// <see cref="MemorySourceExhaustedException"/>.
/// </para>
/// <para>
/// It degrades instead of failing where the machine cannot do what was asked: when <c>mbind</c> is
/// refused (ENOSYS, EPERM in a sandbox, an architecture without known syscall numbers) or the
/// transparent huge page advice is refused, it carries on without, says so once
/// (<see cref="FallbackReason"/>, <see cref="MemoryMapSourceOptions.Warning"/>), and never crashes.
/// On systems other than 64-bit Linux (x86-64, arm64) it cannot be constructed; use
/// <see cref="MemorySource.CreateDefault"/> to get a <see cref="NativeMemorySource"/> there.
/// </para>
/// <para>
/// It never frees anything by itself: regions are returned only through <see cref="Release"/>.
/// Sizes are rounded up to <see cref="Granularity"/> (a page, or the explicit huge page size).
/// </para>
/// <example><code>
/// var source = new MemoryMapSource(new MemoryMapSourceOptions { NumaPolicy = NumaPolicy.Preferred(0) });
/// byte* region = source.Obtain(1 &lt;&lt; 20);
/// // ... use the megabyte ...
/// source.Release(region, 1 &lt;&lt; 20);
/// </code></example>
/// </remarks>
public sealed unsafe partial class MemoryMapSource : IMemorySource
{
    private const string SourceName = nameof(MemoryMapSource);

    // The system calls every step goes through: the kernel's, or a test's stand-in.
    private readonly ILinuxSystemCalls _kernel;
    private readonly int _mapFlags;
    private readonly int[] _requiredAdvice;
    private readonly uint _mbindFlags;

    // This source's entry of the process-wide per-node counter: the policy's node, swapped for -1 when the policy degrades.
    private volatile StrongBox<long> _processMapped;

    // Bytes currently mapped by this source, rounded to the granularity. Interlocked.
    private long _mappedBytes;

    // 1 once the kernel refused the NUMA policy / the THP advice; they are then no longer attempted.
    private int _numaRefused;
    private int _hugePageAdviceRefused;
    private string? _numaFallbackReason;
    private string? _hugePageFallbackReason;

    private long _lockFailureCount;
    private string? _lastLockFailure;
    private string? _lastFailure;

    /// <summary>Creates a source with <paramref name="options"/> (or <see cref="MemoryMapSourceOptions.Default"/>).</summary>
    /// <exception cref="ArgumentException">The options are invalid (the message names the setting).</exception>
    /// <exception cref="PlatformNotSupportedException">Not 64-bit Linux on x86-64 or arm64 (see <see cref="IsSupported"/>).</exception>
    public MemoryMapSource(MemoryMapSourceOptions? options = null)
        : this(options, LinuxSystemCalls.Kernel)
    {
    }

    /// <summary>Creates a source whose system calls go through <paramref name="kernel"/>: the seam through which tests refuse chosen calls.</summary>
    internal MemoryMapSource(MemoryMapSourceOptions? options, ILinuxSystemCalls kernel)
    {
        options ??= MemoryMapSourceOptions.Default;
        options.Validate();
        if (!IsSupported)
        {
            throw new PlatformNotSupportedException(UnsupportedReason);
        }

        _kernel = kernel;
        Options = options;
        Granularity = ComputeGranularity(options.ExplicitHugePages);
        _mapFlags = ComputeMapFlags(options);
        _requiredAdvice = ComputeRequiredAdvice(options);
        _mbindFlags = ComputeMbindFlags(options);
        _processMapped = ProcessCounter(options.NumaPolicy.SingleNode ?? -1);
    }

    /// <summary>Whether this process can use memory mapping: Linux on x86-64 or arm64.</summary>
    public static bool IsSupported => UnsupportedReason is null;

    /// <summary>Why <see cref="IsSupported"/> is false, or null when it is true.</summary>
    public static string? UnsupportedReason =>
        !OperatingSystem.IsLinux()
            ? $"memory mapping is implemented for Linux only; this is {RuntimeInformation.OSDescription}"
            : RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.Arm64)
                ? $"memory mapping is implemented for x86-64 and arm64 Linux only; this process is {RuntimeInformation.ProcessArchitecture}"
                : null;

    /// <summary>The options the source was created with.</summary>
    public MemoryMapSourceOptions Options { get; }

    /// <inheritdoc />
    /// <remarks>The system page size, or the explicit huge page size.</remarks>
    public nuint Granularity { get; }

    /// <summary>Bytes currently mapped through this source (sizes rounded up to <see cref="Granularity"/>).</summary>
    public long MappedBytes => Interlocked.Read(ref _mappedBytes);

    /// <summary>Whether the transparent huge page advice is being applied (false when not requested or refused).</summary>
    public bool TransparentHugePagesApplied => Options.TransparentHugePages && Volatile.Read(ref _hugePageAdviceRefused) == 0;

    /// <summary>Why the source does less than its options ask (NUMA policy or huge page advice refused), or null.</summary>
    public string? FallbackReason
    {
        get
        {
            string? numa = Volatile.Read(ref _numaFallbackReason);
            string? hugePages = Volatile.Read(ref _hugePageFallbackReason);
            return numa is null ? hugePages : hugePages is null ? numa : $"{numa}; {hugePages}";
        }
    }

    /// <summary>Regions that could not be locked although <see cref="MemoryMapSourceOptions.Lock"/> asked for it (they were handed out unlocked).</summary>
    public long LockFailureCount => Interlocked.Read(ref _lockFailureCount);

    /// <summary>The kernel's message for the most recent lock failure, or null.</summary>
    public string? LastLockFailure => Volatile.Read(ref _lastLockFailure);

    /// <summary>Why the most recent failed request failed (the call and its errno), or null.</summary>
    public string? LastFailure => Volatile.Read(ref _lastFailure);

    /// <inheritdoc />
    /// <exception cref="MemorySourceExhaustedException">The kernel refused the mapping or a required step; the message carries its errno.</exception>
    public byte* Obtain(nuint size) => ObtainAligned(size, Granularity);

    /// <inheritdoc />
    public bool TryObtain(nuint size, out byte* region) => TryObtainAligned(size, Granularity, out region);

    /// <summary>Obtains a region of at least <paramref name="size"/> bytes whose address is a multiple of <paramref name="alignment"/>.</summary>
    /// <remarks>Alignments above <see cref="Granularity"/> map <c>alignment - Granularity</c> extra bytes and unmap the unaligned head and tail before advice, policy and population.</remarks>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or too large.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a power of two up to <see cref="Allocator.MaximumAlignment"/>.</exception>
    /// <exception cref="MemorySourceExhaustedException">The kernel refused the mapping or a required step.</exception>
    public byte* ObtainAligned(nuint size, nuint alignment)
    {
        if (!TryObtainCore(size, alignment, out byte* region, out string? failure))
        {
            throw new MemorySourceExhaustedException(SourceName, size, failure!);
        }

        return region;
    }

    /// <summary>Obtains an aligned region like <see cref="ObtainAligned"/> but reports failure by returning <see langword="false"/> (reason in <see cref="LastFailure"/>).</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or too large.</exception>
    /// <exception cref="ArgumentException"><paramref name="alignment"/> is not a power of two up to <see cref="Allocator.MaximumAlignment"/>.</exception>
    public bool TryObtainAligned(nuint size, nuint alignment, out byte* region) =>
        TryObtainCore(size, alignment, out region, out _);

    /// <summary>Unmaps a region obtained from this source with the same <paramref name="size"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="region"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or too large.</exception>
    /// <exception cref="ArgumentException">The region is not aligned to <see cref="Granularity"/>, or the kernel rejected the range (EINVAL).</exception>
    public void Release(byte* region, nuint size)
    {
        ArgumentNullException.ThrowIfNull(region);
        nuint rounded = RoundSize(size, nameof(size));
        if (!Allocator.IsAligned((nuint)region, Granularity))
        {
            throw new ArgumentException($"0x{(nuint)region:X} cannot be a region of this {SourceName}: regions are aligned to {Granularity} bytes.", nameof(region));
        }

        if (_kernel.Unmap((nint)region, rounded) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new ArgumentException(
                $"{SourceName} could not release {rounded} bytes at 0x{(nuint)region:X}: {LinuxErrors.Describe("munmap", errno)}.",
                nameof(region));
        }

        AccountMapped(-(long)rounded);
    }

    /// <summary>
    /// Resizes a region to <paramref name="newSize"/> bytes, moving it when needed
    /// (<c>mremap</c> with <c>MREMAP_MAYMOVE</c>); the first min(old, new) bytes are kept and the
    /// kernel carries advice, policy and locking over to the new part (which is not prefaulted).
    /// </summary>
    /// <returns>The region's (possibly new) address, aligned to <see cref="Granularity"/> only.</returns>
    /// <exception cref="MemorySourceExhaustedException">The kernel refused; the original region is unchanged.</exception>
    public byte* Remap(byte* region, nuint oldSize, nuint newSize)
    {
        if (!TryRemapCore(region, oldSize, newSize, out byte* moved, out string? failure))
        {
            throw new MemorySourceExhaustedException(SourceName, newSize, failure!);
        }

        return moved;
    }

    /// <summary>Resizes like <see cref="Remap"/> but reports failure by returning <see langword="false"/> (the original region unchanged).</summary>
    /// <exception cref="ArgumentNullException"><paramref name="region"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is zero or too large.</exception>
    public bool TryRemap(byte* region, nuint oldSize, nuint newSize, out byte* newRegion) =>
        TryRemapCore(region, oldSize, newSize, out newRegion, out _);

    /// <summary>Resizes a region without moving it (<c>mremap</c> without <c>MREMAP_MAYMOVE</c>); shrinking always succeeds.</summary>
    /// <returns><see langword="true"/> when the region now has the new size at the same address; otherwise it is unchanged.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="region"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A size is zero or too large.</exception>
    public bool TryResizeInPlace(byte* region, nuint oldSize, nuint newSize)
    {
        ArgumentNullException.ThrowIfNull(region);
        nuint oldRounded = RoundSize(oldSize, nameof(oldSize));
        nuint newRounded = RoundSize(newSize, nameof(newSize));
        if (oldRounded == newRounded)
        {
            return true;
        }

        if (_kernel.Remap((nint)region, oldRounded, newRounded, 0) == MAP_FAILED)
        {
            RecordFailureSlow(LinuxErrors.Describe("mremap", Marshal.GetLastPInvokeError()));
            return false;
        }

        AccountMapped((long)newRounded - (long)oldRounded);
        return true;
    }

    /// <summary>The mmap flags for <paramref name="options"/>: private, anonymous, optionally no-reserve and huge pages; never locked or populated.</summary>
    /// <remarks>
    /// Explicit huge pages never get <c>MAP_NORESERVE</c>: without a reservation the mapping succeeds
    /// even when no huge page is free, and the first touch then kills the process with SIGBUS. With
    /// it, <c>mmap</c> fails cleanly with ENOMEM.
    /// </remarks>
    internal static int ComputeMapFlags(MemoryMapSourceOptions options) =>
        MAP_PRIVATE | MAP_ANONYMOUS
        | (options.NoReserve && options.ExplicitHugePages == ExplicitHugePages.None ? MAP_NORESERVE : 0)
        | options.ExplicitHugePages switch
        {
            ExplicitHugePages.Size2MiB => MAP_HUGE_2MB,
            ExplicitHugePages.Size1GiB => MAP_HUGE_1GB,
            _ => 0,
        };

    /// <summary>The region granularity: the system page size or the explicit huge page size.</summary>
    internal static nuint ComputeGranularity(ExplicitHugePages hugePages) => hugePages switch
    {
        ExplicitHugePages.Size2MiB => 2u << 20,
        ExplicitHugePages.Size1GiB => 1u << 30,
        _ => (nuint)Environment.SystemPageSize,
    };

    /// <summary>
    /// The portable resize: obtain a new region, copy min(old, new) bytes, release the old one. The
    /// seed copied the old size even when shrinking, past the end of the new region (W-MM4).
    /// </summary>
    internal bool TryRemapByCopy(byte* region, nuint oldSize, nuint newSize, out byte* newRegion, out string? failure)
    {
        if (!TryObtainCore(newSize, Granularity, out newRegion, out failure))
        {
            return false;
        }

        Buffer.MemoryCopy(region, newRegion, newSize, Math.Min(oldSize, newSize));
        Release(region, oldSize);
        return true;
    }

    private bool TryObtainCore(nuint size, nuint alignment, out byte* region, out string? failure)
    {
        nuint rounded = RoundSize(size, nameof(size));
        if (!Allocator.IsValidAlignment(alignment))
        {
            Allocator.ThrowInvalidAlignment(alignment);
        }

        nuint extra = alignment > Granularity ? alignment - Granularity : 0;
        if (rounded > Allocator.MaximumSize - extra)
        {
            throw new ArgumentOutOfRangeException(
                nameof(size),
                size,
                $"{size} bytes rounded up to {rounded} (granularity {Granularity}), plus {extra} bytes to reach alignment {alignment}, exceed the largest region ({Allocator.MaximumSize} bytes).");
        }

        region = null;
        nint mapped = _kernel.Map(0, rounded + extra, PROT_READ | PROT_WRITE, _mapFlags, -1, 0);
        if (mapped == MAP_FAILED)
        {
            int errno = Marshal.GetLastPInvokeError();
            failure = RecordFailureSlow(LinuxErrors.Describe("mmap", errno) + HugePageHint(errno));
            return false;
        }

        byte* start = (byte*)mapped;
        if (extra != 0)
        {
            start = TrimToAlignment(mapped, rounded, extra, alignment);
        }

        try
        {
            failure = Prepare(start, rounded);
        }
        catch
        {
            // Only a throwing Warning callback gets here; do not leak the mapping.
            _kernel.Unmap((nint)start, rounded);
            throw;
        }

        if (failure is not null)
        {
            _kernel.Unmap((nint)start, rounded);
            RecordFailureSlow(failure);
            return false;
        }

        AccountMapped((long)rounded);
        region = start;
        if (Options.Lock)
        {
            try
            {
                LockRegion(start, rounded);
            }
            catch
            {
                // Only a throwing Warning callback gets here; do not leak the region.
                Release(start, rounded);
                region = null;
                throw;
            }
        }

        return true;
    }

    // Unmaps the unaligned head and the tail of an over-sized mapping; returns the aligned start.
    private byte* TrimToAlignment(nint mapped, nuint size, nuint extra, nuint alignment)
    {
        nuint start = Allocator.AlignUp((nuint)mapped, alignment);
        nuint head = start - (nuint)mapped;
        nuint tail = extra - head;
        if (head != 0)
        {
            _kernel.Unmap(mapped, head);
        }

        if (tail != 0)
        {
            _kernel.Unmap((nint)(start + size), tail);
        }

        return (byte*)start;
    }

    private bool TryRemapCore(byte* region, nuint oldSize, nuint newSize, out byte* newRegion, out string? failure)
    {
        ArgumentNullException.ThrowIfNull(region);
        nuint oldRounded = RoundSize(oldSize, nameof(oldSize));
        nuint newRounded = RoundSize(newSize, nameof(newSize));
        failure = null;
        if (oldRounded == newRounded)
        {
            newRegion = region;
            return true;
        }

        nint moved = _kernel.Remap((nint)region, oldRounded, newRounded, MREMAP_MAYMOVE);
        if (moved != MAP_FAILED)
        {
            AccountMapped((long)newRounded - (long)oldRounded);
            newRegion = (byte*)moved;
            return true;
        }

        int errno = Marshal.GetLastPInvokeError();
        if (errno == EINVAL && Options.ExplicitHugePages != ExplicitHugePages.None)
        {
            // Kernels before 5.16 cannot mremap hugetlb mappings.
            return TryRemapByCopy(region, oldSize, newSize, out newRegion, out failure);
        }

        newRegion = null;
        failure = RecordFailureSlow(LinuxErrors.Describe("mremap", errno));
        return false;
    }

    private void DegradeOnce(ref int refused, ref string? reason, string message)
    {
        if (Interlocked.Exchange(ref refused, 1) == 0)
        {
            Volatile.Write(ref reason, message);
            Options.Warning?.Invoke(message);
        }
    }

    private string RecordFailureSlow(string failure)
    {
        Volatile.Write(ref _lastFailure, failure);
        return failure;
    }

    private nuint RoundSize(nuint size, string parameterName) =>
        SourceSize.Round(size, Granularity, parameterName);

    private string HugePageHint(int errno) =>
        errno == ENOMEM && Options.ExplicitHugePages != ExplicitHugePages.None
            ? $" (explicit {Options.ExplicitHugePages} huge pages need pages reserved in advance: see /sys/kernel/mm/hugepages and vm.nr_hugepages)"
            : string.Empty;
}
