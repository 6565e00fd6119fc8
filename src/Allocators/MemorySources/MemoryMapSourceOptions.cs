namespace AllocHosting.Allocators.MemorySources;

/// <summary>
/// How a <see cref="MemoryMapSource"/> maps, advises, places, populates and locks its regions.
/// Immutable once built (init-only properties); every default is stated on its property.
/// </summary>
/// <remarks>
/// <para>
/// The defaults give plain unlocked, non-prefaulted, swap-unreserved private anonymous mappings
/// that are left out of core dumps. Unlike the seed's <c>Default</c> preset, nothing is locked or
/// populated unless asked for: <c>MAP_LOCKED</c> made mappings fail once <c>RLIMIT_MEMLOCK</c> was
/// reached, and <c>MAP_POPULATE</c> faulted pages in before the NUMA policy was applied.
/// </para>
/// <example><code>
/// var options = new MemoryMapSourceOptions
/// {
///     NumaPolicy = NumaPolicy.Bind(NumaNodeSet.Of(0)),
///     Prefault = true,          // pages are populated after mbind, so on node 0
/// };
/// using var allocator = new MemoryMapAllocator(options);
/// </code></example>
/// </remarks>
public sealed record MemoryMapSourceOptions
{
    /// <summary>The default options.</summary>
    public static MemoryMapSourceOptions Default { get; } = new();

    /// <summary>Where pages are placed (<c>mbind</c> right after mapping). Default: <see cref="NumaPolicy.Default"/>, which issues no call.</summary>
    public NumaPolicy NumaPolicy { get; init; } = NumaPolicy.Default;

    /// <summary>
    /// Pass <c>MPOL_MF_STRICT | MPOL_MF_MOVE</c> to <c>mbind</c>: fail when existing pages cannot be
    /// moved to the policy's nodes. Default: <see langword="false"/>.
    /// </summary>
    public bool StrictNumaPolicy { get; init; }

    /// <summary>Advise transparent huge pages (<c>madvise(MADV_HUGEPAGE)</c>, its own call). Default: <see langword="false"/>.</summary>
    /// <remarks>Best effort: when the kernel refuses the advice the source goes on without it and says so once.</remarks>
    public bool TransparentHugePages { get; init; }

    /// <summary>
    /// Map with explicit huge pages (<c>MAP_HUGETLB</c> and the page size); region sizes and the
    /// source's granularity become the huge page size. Default: <see cref="MemorySources.ExplicitHugePages.None"/>.
    /// </summary>
    public ExplicitHugePages ExplicitHugePages { get; init; }

    /// <summary>
    /// Populate every page when a region is obtained, after the NUMA policy is applied
    /// (<c>madvise(MADV_POPULATE_WRITE)</c>, falling back to writing one byte per page on kernels
    /// before 5.14). Default: <see langword="false"/>.
    /// </summary>
    public bool Prefault { get; init; }

    /// <summary>
    /// Lock every region into memory (<c>mlock</c> after mapping). A region that cannot be locked
    /// (usually <c>RLIMIT_MEMLOCK</c>) is still handed out: the failure is counted in
    /// <see cref="MemoryMapSource.LockFailureCount"/> and passed to <see cref="Warning"/>.
    /// Default: <see langword="false"/>.
    /// </summary>
    public bool Lock { get; init; }

    /// <summary>
    /// Leave regions out of core dumps (<c>madvise(MADV_DONTDUMP)</c>, its own call). Default:
    /// <see langword="true"/>: regions hold request data that should not end up in a dump, and
    /// arenas are large.
    /// </summary>
    public bool ExcludeFromCoreDumps { get; init; } = true;

    /// <summary>
    /// Do not reserve swap space for regions (<c>MAP_NORESERVE</c>). Default: <see langword="true"/>.
    /// Ignored with <see cref="ExplicitHugePages"/>: huge pages are always reserved when mapped, so that
    /// a shortage fails the request instead of killing the process (SIGBUS) on first touch.
    /// </summary>
    public bool NoReserve { get; init; } = true;

    /// <summary>
    /// Receives a one-line message when the source degrades (the NUMA policy or the transparent
    /// huge page advice is refused by the kernel: once each) or cannot lock a region (every time).
    /// Called on the thread obtaining the region, possibly on several threads at once; it must not
    /// throw (if it does, the region is released and the exception propagates). Default: none.
    /// </summary>
    public Action<string>? Warning { get; init; }

    /// <summary>Throws when the options contradict each other or hold invalid values; the message names the setting.</summary>
    /// <exception cref="ArgumentException">An option is invalid.</exception>
    public void Validate()
    {
        if (NumaPolicy is null)
        {
            throw new ArgumentException($"{nameof(MemoryMapSourceOptions)}.{nameof(NumaPolicy)} must not be null; use {nameof(MemorySources.NumaPolicy)}.{nameof(MemorySources.NumaPolicy.Default)} for no policy.", nameof(NumaPolicy));
        }

        if (!Enum.IsDefined(ExplicitHugePages))
        {
            throw new ArgumentException($"{nameof(MemoryMapSourceOptions)}.{nameof(ExplicitHugePages)} has the undefined value {(int)ExplicitHugePages}.", nameof(ExplicitHugePages));
        }

        if (TransparentHugePages && ExplicitHugePages != ExplicitHugePages.None)
        {
            throw new ArgumentException(
                $"{nameof(MemoryMapSourceOptions)}.{nameof(TransparentHugePages)} and {nameof(MemoryMapSourceOptions)}.{nameof(ExplicitHugePages)} are different kernel mechanisms (MADV_HUGEPAGE and MAP_HUGETLB); choose one.",
                nameof(TransparentHugePages));
        }
    }
}
