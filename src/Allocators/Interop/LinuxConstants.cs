namespace AllocHosting.Allocators.Interop;

/// <summary>
/// The Linux kernel constants the memory-mapping and NUMA code passes to the system calls in
/// <see cref="LinuxMemory"/> and <see cref="LinuxNuma"/>, kept in one place under their kernel names
/// so that they can be checked against the headers at a glance.
/// </summary>
/// <remarks>
/// Values are those of the generic Linux ABI shared by x86-64 and arm64 (the only architectures
/// <see cref="MemorySources.MemoryMapSource"/> accepts); PowerPC, MIPS and SPARC use different
/// <c>MAP_*</c> values and are deliberately not supported.
/// </remarks>
internal static class LinuxConstants
{
    // <sys/mman.h> protection bits (PROT_NONE: no access at all, for guarded released chunks).
    public const int PROT_NONE = 0x0;
    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;

    // mmap flags. Never MAP_LOCKED (0x2000) or MAP_POPULATE (0x8000): the port locks with mlock and
    // populates after mbind instead (seed-reference 4.4, section 16), so they are not declared.
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_NORESERVE = 0x4000;
    public const int MAP_HUGETLB = 0x40000;
    public const int MAP_HUGE_SHIFT = 26;
    public const int MAP_HUGE_2MB = (21 << MAP_HUGE_SHIFT) | MAP_HUGETLB;
    public const int MAP_HUGE_1GB = (30 << MAP_HUGE_SHIFT) | MAP_HUGETLB;

    /// <summary>mmap's and mremap's failure value, <c>(void*)-1</c>.</summary>
    public const nint MAP_FAILED = -1;

    // mremap flags.
    public const int MREMAP_MAYMOVE = 1;

    // madvise advice values: each is a separate call, they are not bit flags (W-MM1).
    public const int MADV_HUGEPAGE = 14;
    public const int MADV_DONTDUMP = 16;
    public const int MADV_POPULATE_WRITE = 23;

    // NUMA policy modes: the values of NumaPolicyMode (MPOL_DEFAULT 0 … MPOL_LOCAL 4).

    // Mode flags OR-ed into the mode; the kernel rejects both together (W-NU2).
    public const int MPOL_F_STATIC_NODES = 1 << 15;
    public const int MPOL_F_RELATIVE_NODES = 1 << 14;
    public const int MPOL_MODE_FLAGS = MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES;

    // mbind flags. MPOL_MF_MOVE_ALL needs CAP_SYS_NICE and is never used.
    public const uint MPOL_MF_STRICT = 1;
    public const uint MPOL_MF_MOVE = 2;

    // get_mempolicy flags.
    public const ulong MPOL_F_NODE = 1;
    public const ulong MPOL_F_ADDR = 2;

    // errno values the sources react to.
    public const int EPERM = 1;
    public const int EINTR = 4;
    public const int ENOMEM = 12;
    public const int EINVAL = 22;
    public const int ENOSYS = 38;
}
