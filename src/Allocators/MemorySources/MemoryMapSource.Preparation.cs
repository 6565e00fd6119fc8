using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;
using static AllocHosting.Allocators.Interop.LinuxConstants;

namespace AllocHosting.Allocators.MemorySources;

// The steps after mmap that make a region what the options ask for: advice (required, then the
// optional transparent huge page advice), the NUMA policy, population and locking; and the
// residency diagnostic that shows population and locking took effect.
public sealed unsafe partial class MemoryMapSource
{
    /// <summary>The advice whose refusal fails the request: <c>MADV_DONTDUMP</c> when core dumps exclude regions.</summary>
    /// <remarks>
    /// One <c>madvise</c> call per advice, never OR-ed (W-MM1). The transparent huge page advice is
    /// optional and applied after these by its own step, which degrades once when refused.
    /// </remarks>
    internal static int[] ComputeRequiredAdvice(MemoryMapSourceOptions options) =>
        options.ExcludeFromCoreDumps ? [MADV_DONTDUMP] : [];

    /// <summary>
    /// The number of pages of the range at <paramref name="address"/> that are resident in memory now
    /// (<c>mincore</c>): with <see cref="MemoryMapSourceOptions.Prefault"/> or
    /// <see cref="MemoryMapSourceOptions.Lock"/> every page of a region is; otherwise only the pages
    /// touched so far. Null when the kernel cannot tell (not Linux, or the range is not mapped).
    /// </summary>
    /// <param name="address">The start of the range; it must be page-aligned.</param>
    /// <param name="length">The length of the range in bytes (counted in whole pages).</param>
    /// <exception cref="OverflowException">The range spans more than <see cref="int.MaxValue"/> pages.</exception>
    public static int? CountResidentPages(void* address, nuint length)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        nuint pageSize = (nuint)Environment.SystemPageSize;
        int pages = checked((int)((length + pageSize - 1) / pageSize));
        byte[] vector = new byte[pages];
        fixed (byte* v = vector)
        {
            if (LinuxSystemCalls.Kernel.Residency((nint)address, length, v) != 0)
            {
                return null;
            }
        }

        return vector.Count(static b => (b & 1) != 0);
    }

    // madvise → mbind → populate. Returns null, or why a required step failed.
    private string? Prepare(byte* start, nuint size)
    {
        foreach (int advice in _requiredAdvice)
        {
            if (_kernel.Advise((nint)start, size, advice) != 0)
            {
                return LinuxErrors.Describe(AdviceCall(advice), Marshal.GetLastPInvokeError());
            }
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

        if (_kernel.Advise((nint)start, size, MADV_HUGEPAGE) == 0)
        {
            return;
        }

        int errno = Marshal.GetLastPInvokeError();
        DegradeOnce(ref _hugePageAdviceRefused, ref _hugePageFallbackReason,
            $"transparent huge pages are not advised any more: {LinuxErrors.Describe("madvise(MADV_HUGEPAGE)", errno)}");
    }

    private string? Populate(byte* start, nuint size)
    {
        for (int attempt = 0; attempt < 3; attempt++)
        {
            if (_kernel.Advise((nint)start, size, MADV_POPULATE_WRITE) == 0)
            {
                return null;
            }

            int errno = Marshal.GetLastPInvokeError();
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
        if (_kernel.Lock((nint)start, size) == 0)
        {
            return;
        }

        int errno = Marshal.GetLastPInvokeError();
        string message = $"{SourceName} could not lock {size} bytes at 0x{(nuint)start:X}; they are handed out unlocked: "
            + LinuxErrors.Describe("mlock", errno)
            + " (RLIMIT_MEMLOCK, see ulimit -l)";
        Interlocked.Increment(ref _lockFailureCount);
        Volatile.Write(ref _lastLockFailure, message);
        Options.Warning?.Invoke(message);
    }

    // The call as messages name it; a constant for every required advice.
    private static string AdviceCall(int advice) => advice switch
    {
        MADV_DONTDUMP => "madvise(MADV_DONTDUMP)",
        _ => $"madvise({advice.ToString(System.Globalization.CultureInfo.InvariantCulture)})",
    };
}
