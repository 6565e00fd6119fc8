using System.Collections.Concurrent;
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
public sealed unsafe class MemoryMapSource : IMemorySource
{
    private const string SourceName = nameof(MemoryMapSource);

    // Bytes mapped by every source of the process, keyed by the node they are attributed to (-1: unknown).
    private static readonly ConcurrentDictionary<int, StrongBox<long>> s_processMappedByNode = new();

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
    {
        options ??= MemoryMapSourceOptions.Default;
        options.Validate();
        if (!IsSupported)
        {
            throw new PlatformNotSupportedException(UnsupportedReason);
        }

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

    /// <summary>
    /// The NUMA node this source's bytes are attributed to: the node of a <c>Preferred</c> or
    /// <c>Bind</c> policy naming one node while the policy applies, otherwise -1 (unknown).
    /// </summary>
    /// <remarks>It turns to -1 when the kernel refuses the policy, which happens on the first mapping, before any bytes are attributed.</remarks>
    public int MappedNode => NumaPolicyApplied ? Options.NumaPolicy.SingleNode ?? -1 : -1;

    /// <summary>Whether the NUMA policy is being applied (false once the kernel refused it; true for the default policy).</summary>
    public bool NumaPolicyApplied => Volatile.Read(ref _numaRefused) == 0;

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

    /// <summary>
    /// Tests only: given a step name (<c>"mmap"</c>, <c>"madvise(MADV_DONTDUMP)"</c>,
    /// <c>"madvise(MADV_HUGEPAGE)"</c>, <c>"mbind"</c>, <c>"populate"</c>, <c>"mlock"</c> or <c>"mremap"</c>),
    /// returns an errno to act as if the kernel had refused that step, or 0 to make the real call.
    /// Lets the degradation and fallback paths be exercised on machines where the kernel never
    /// refuses (one node, CAP_IPC_LOCK, a kernel that knows every advice).
    /// </summary>
    internal Func<string, int>? SimulatedErrno { get; set; }

    /// <summary>Bytes this source has mapped now, by NUMA node (-1: node unknown). One entry per node.</summary>
    public IReadOnlyDictionary<int, long> GetMappedBytesByNode() =>
        new Dictionary<int, long> { [MappedNode] = MappedBytes };

    /// <summary>
    /// Bytes mapped now by every <see cref="MemoryMapSource"/> of the process, by NUMA node (-1: node
    /// unknown): the figure behind the <c>allochosting.mapped</c> metric.
    /// </summary>
    public static IReadOnlyDictionary<int, long> GetProcessMappedBytesByNode()
    {
        var snapshot = new Dictionary<int, long>();
        foreach (var (node, bytes) in s_processMappedByNode)
        {
            snapshot[node] = Interlocked.Read(ref bytes.Value);
        }

        return snapshot;
    }

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

        if (LinuxMemory.Unmap((nint)region, rounded) != 0)
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

        if (LinuxMemory.Remap((nint)region, oldRounded, newRounded, 0) == MAP_FAILED)
        {
            RecordFailure(LinuxErrors.Describe("mremap", Marshal.GetLastPInvokeError()));
            return false;
        }

        AccountMapped((long)newRounded - (long)oldRounded);
        return true;
    }

    /// <summary>
    /// The NUMA node of the page backing <paramref name="address"/>
    /// (<c>get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)</c>, which faults the page in if needed), or null
    /// when the kernel cannot tell (not Linux, NUMA calls refused, address not mapped).
    /// </summary>
    public static int? GetNodeOfAddress(void* address)
    {
        if (!LinuxNuma.IsSupported)
        {
            return null;
        }

        int node;
        return LinuxNuma.GetMempolicy(&node, null, 0, (nint)address, MPOL_F_NODE | MPOL_F_ADDR) == 0 ? node : null;
    }

    /// <summary>
    /// The NUMA policy the kernel holds for the range containing <paramref name="address"/>
    /// (<c>get_mempolicy(MPOL_F_ADDR)</c>), or null when it cannot tell.
    /// </summary>
    public static NumaPolicy? GetPolicyOfAddress(void* address)
    {
        if (!LinuxNuma.IsSupported)
        {
            return null;
        }

        // The kernel insists on maxnode >= its node count; 4096 bits covers every configuration.
        const int Words = 64;
        ulong* mask = stackalloc ulong[Words];
        int mode;
        if (LinuxNuma.GetMempolicy(&mode, mask, (64 * Words) + 1, (nint)address, MPOL_F_ADDR) != 0)
        {
            return null;
        }

        var set = NumaNodeSet.FromMask(new ReadOnlySpan<ulong>(mask, Words)).WithNodeIdMeaning(
            (mode & MPOL_F_STATIC_NODES) != 0, (mode & MPOL_F_RELATIVE_NODES) != 0);
        return NumaPolicy.FromKernel((NumaPolicyMode)(mode & ~MPOL_MODE_FLAGS), set);
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

    /// <summary>
    /// The advice values every region gets, one <c>madvise</c> call each, in order (W-MM1: never OR-ed):
    /// the <see cref="ComputeRequiredAdvice">required advice</see>, then the optional <c>MADV_HUGEPAGE</c>.
    /// </summary>
    internal static int[] ComputeAdvice(MemoryMapSourceOptions options) =>
        options.TransparentHugePages ? [.. ComputeRequiredAdvice(options), MADV_HUGEPAGE] : ComputeRequiredAdvice(options);

    /// <summary>The advice whose refusal fails the request: <c>MADV_DONTDUMP</c> when core dumps exclude regions.</summary>
    /// <remarks>The transparent huge page advice is optional and applied by its own step, which degrades once when refused.</remarks>
    internal static int[] ComputeRequiredAdvice(MemoryMapSourceOptions options) =>
        options.ExcludeFromCoreDumps ? [MADV_DONTDUMP] : [];

    /// <summary>The <c>flags</c> argument of <c>mbind</c>.</summary>
    internal static uint ComputeMbindFlags(MemoryMapSourceOptions options) =>
        options.StrictNumaPolicy ? MPOL_MF_STRICT | MPOL_MF_MOVE : 0;

    /// <summary>The region granularity: the system page size or the explicit huge page size.</summary>
    internal static nuint ComputeGranularity(ExplicitHugePages hugePages) => hugePages switch
    {
        ExplicitHugePages.Size2MiB => 2u << 20,
        ExplicitHugePages.Size1GiB => 1u << 30,
        _ => (nuint)Environment.SystemPageSize,
    };

    /// <summary>The number of resident pages in a range (<c>mincore</c>), or -1 when the kernel refuses.</summary>
    internal static int CountResidentPages(void* address, nuint length)
    {
        nuint pageSize = (nuint)Environment.SystemPageSize;
        int pages = checked((int)((length + pageSize - 1) / pageSize));
        byte[] vector = new byte[pages];
        fixed (byte* v = vector)
        {
            if (LinuxMemory.Residency((nint)address, length, v) != 0)
            {
                return -1;
            }
        }

        return vector.Count(static b => (b & 1) != 0);
    }

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
            Allocator.ThrowSizeTooLarge(size, nameof(size));
        }

        region = null;
        int errno = SimulatedErrno?.Invoke("mmap") ?? 0;
        nint mapped = errno == 0 ? LinuxMemory.Map(0, rounded + extra, PROT_READ | PROT_WRITE, _mapFlags, -1, 0) : MAP_FAILED;
        if (mapped == MAP_FAILED)
        {
            if (errno == 0)
            {
                errno = Marshal.GetLastPInvokeError();
            }

            failure = RecordFailure(LinuxErrors.Describe("mmap", errno) + HugePageHint(errno));
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
            LinuxMemory.Unmap((nint)start, rounded);
            throw;
        }

        if (failure is not null)
        {
            LinuxMemory.Unmap((nint)start, rounded);
            RecordFailure(failure);
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
    private static byte* TrimToAlignment(nint mapped, nuint size, nuint extra, nuint alignment)
    {
        nuint start = Allocator.AlignUp((nuint)mapped, alignment);
        nuint head = start - (nuint)mapped;
        nuint tail = extra - head;
        if (head != 0)
        {
            LinuxMemory.Unmap(mapped, head);
        }

        if (tail != 0)
        {
            LinuxMemory.Unmap((nint)(start + size), tail);
        }

        return (byte*)start;
    }

    // madvise → mbind → populate. Returns null, or why a required step failed.
    private string? Prepare(byte* start, nuint size)
    {
        foreach (int advice in _requiredAdvice)
        {
            int errno = SimulatedErrno is { } simulated ? simulated(AdviceCall(advice)) : 0;
            if (errno == 0)
            {
                if (LinuxMemory.Advise((nint)start, size, advice) == 0)
                {
                    continue;
                }

                errno = Marshal.GetLastPInvokeError();
            }

            return LinuxErrors.Describe(AdviceCall(advice), errno);
        }

        AdviseTransparentHugePages(start, size);
        string? failure = ApplyNumaPolicy(start, size);
        if (failure is null && Options.Prefault)
        {
            failure = Populate(start, size);
        }

        return failure;
    }

    // Optional: a refusal is reported once and the advice is not attempted again.
    private void AdviseTransparentHugePages(byte* start, nuint size)
    {
        if (!Options.TransparentHugePages || Volatile.Read(ref _hugePageAdviceRefused) != 0)
        {
            return;
        }

        int errno = SimulatedErrno?.Invoke("madvise(MADV_HUGEPAGE)") ?? 0;
        if (errno == 0)
        {
            if (LinuxMemory.Advise((nint)start, size, MADV_HUGEPAGE) == 0)
            {
                return;
            }

            errno = Marshal.GetLastPInvokeError();
        }

        DegradeOnce(ref _hugePageAdviceRefused, ref _hugePageFallbackReason,
            $"transparent huge pages are not advised any more: {LinuxErrors.Describe("madvise(MADV_HUGEPAGE)", errno)}");
    }

    private string? ApplyNumaPolicy(byte* start, nuint size)
    {
        NumaPolicy policy = Options.NumaPolicy;
        if (policy.Mode == NumaPolicyMode.Default || Volatile.Read(ref _numaRefused) != 0)
        {
            return null;
        }

        int errno = SimulatedErrno?.Invoke("mbind") ?? 0;
        if (errno == 0)
        {
            ReadOnlySpan<ulong> words = policy.Nodes.MaskWords;
            int result;
            fixed (ulong* mask = words)
            {
                result = LinuxNuma.Mbind((nint)start, size, policy.KernelMode, words.IsEmpty ? null : mask, policy.Nodes.MaxNode, _mbindFlags);
            }

            if (result == 0)
            {
                return null;
            }

            errno = Marshal.GetLastPInvokeError();
        }

        if (errno is ENOSYS or EPERM)
        {
            _processMapped = ProcessCounter(-1);
            DegradeOnce(ref _numaRefused, ref _numaFallbackReason,
                $"the NUMA policy {policy} is not applied: {LinuxErrors.Describe("mbind", errno)}");
            return null;
        }

        return LinuxErrors.Describe($"mbind({policy})", errno);
    }

    private string? Populate(byte* start, nuint size)
    {
        for (int attempt = 0; attempt < 3; attempt++)
        {
            int errno = SimulatedErrno?.Invoke("populate") ?? 0;
            if (errno == 0)
            {
                if (LinuxMemory.Advise((nint)start, size, MADV_POPULATE_WRITE) == 0)
                {
                    return null;
                }

                errno = Marshal.GetLastPInvokeError();
            }

            if (errno == EINVAL)
            {
                // Kernels before 5.14 do not know the advice: fault each page in by writing the zero it already holds.
                for (nuint offset = 0; offset < size; offset += Granularity)
                {
                    Volatile.Write(ref start[offset], 0);
                }

                return null;
            }

            if (errno != EINTR)
            {
                return LinuxErrors.Describe("madvise(MADV_POPULATE_WRITE)", errno);
            }
        }

        return "madvise(MADV_POPULATE_WRITE) was interrupted three times";
    }

    private void LockRegion(byte* start, nuint size)
    {
        int errno = SimulatedErrno?.Invoke("mlock") ?? 0;
        if (errno == 0)
        {
            if (LinuxMemory.Lock((nint)start, size) == 0)
            {
                return;
            }

            errno = Marshal.GetLastPInvokeError();
        }

        string message = $"{SourceName} could not lock {size} bytes at 0x{(nuint)start:X}; they are handed out unlocked: "
            + LinuxErrors.Describe("mlock", errno)
            + " (RLIMIT_MEMLOCK, see ulimit -l)";
        Interlocked.Increment(ref _lockFailureCount);
        Volatile.Write(ref _lastLockFailure, message);
        Options.Warning?.Invoke(message);
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

        int errno = SimulatedErrno?.Invoke("mremap") ?? 0;
        if (errno == 0)
        {
            nint moved = LinuxMemory.Remap((nint)region, oldRounded, newRounded, MREMAP_MAYMOVE);
            if (moved != MAP_FAILED)
            {
                AccountMapped((long)newRounded - (long)oldRounded);
                newRegion = (byte*)moved;
                return true;
            }

            errno = Marshal.GetLastPInvokeError();
        }

        if (errno == EINVAL && Options.ExplicitHugePages != ExplicitHugePages.None)
        {
            // Kernels before 5.16 cannot mremap hugetlb mappings.
            return TryRemapByCopy(region, oldSize, newSize, out newRegion, out failure);
        }

        newRegion = null;
        failure = RecordFailure(LinuxErrors.Describe("mremap", errno));
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

    private string RecordFailure(string failure)
    {
        Volatile.Write(ref _lastFailure, failure);
        return failure;
    }

    private void AccountMapped(long delta)
    {
        Interlocked.Add(ref _mappedBytes, delta);
        Interlocked.Add(ref _processMapped.Value, delta);
    }

    private static StrongBox<long> ProcessCounter(int node) =>
        s_processMappedByNode.GetOrAdd(node, static _ => new StrongBox<long>());

    private nuint RoundSize(nuint size, string parameterName) =>
        SourceSize.Round(size, Granularity, parameterName);

    private string HugePageHint(int errno) =>
        errno == ENOMEM && Options.ExplicitHugePages != ExplicitHugePages.None
            ? $" (explicit {Options.ExplicitHugePages} huge pages need pages reserved in advance: see /sys/kernel/mm/hugepages and vm.nr_hugepages)"
            : string.Empty;

    // The call as messages and simulated steps name it; a constant for every advice in use.
    private static string AdviceCall(int advice) => advice switch
    {
        MADV_DONTDUMP => "madvise(MADV_DONTDUMP)",
        _ => $"madvise({advice.ToString(System.Globalization.CultureInfo.InvariantCulture)})",
    };
}
