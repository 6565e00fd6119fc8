namespace AllocHosting.Allocators;

/// <summary>How a <see cref="PersistentMemorySource"/> maps its file.</summary>
public enum PersistentMappingMode
{
    /// <summary>
    /// <c>MAP_SHARED</c>: stores go to the page cache; a range is durable once written back with
    /// <c>msync</c> (or libpmem2's persist function, which does the same for such a mapping).
    /// </summary>
    Shared,

    /// <summary>
    /// <c>MAP_SHARED_VALIDATE | MAP_SYNC</c> on a DAX file system: stores go straight to persistent
    /// memory, and a range is durable once the CPU caches holding it are flushed (libpmem2's persist
    /// function; <c>msync</c> does it too, at the cost of a system call).
    /// </summary>
    SharedSync,
}
