namespace AllocHosting.Allocators.MemorySources;

/// <summary>Explicit (hugetlbfs) huge pages for a <see cref="MemoryMapSource"/>: <c>MAP_HUGETLB</c> with a page size.</summary>
/// <remarks>
/// These come from the pool reserved by the administrator (<c>vm.nr_hugepages</c>, or the per-size
/// files under <c>/sys/kernel/mm/hugepages</c>); with no pages reserved every mapping fails. They are a
/// different mechanism from <see cref="MemoryMapSourceOptions.TransparentHugePages"/>, which the seed
/// mixed up (W-MM2).
/// </remarks>
public enum ExplicitHugePages
{
    /// <summary>Regular pages (the default).</summary>
    None = 0,

    /// <summary>2 MiB huge pages (x86-64, arm64 with 4 KiB base pages).</summary>
    Size2MiB = 1,

    /// <summary>1 GiB huge pages (x86-64 with <c>pdpe1gb</c>, arm64 with 4 KiB base pages).</summary>
    Size1GiB = 2,
}
