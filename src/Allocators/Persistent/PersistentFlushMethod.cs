namespace AllocHosting.Allocators;

/// <summary>How a <see cref="PersistentMemorySource"/> makes a range durable.</summary>
public enum PersistentFlushMethod
{
    /// <summary><c>msync(MS_SYNC)</c> of the pages the range touches.</summary>
    Msync,

    /// <summary>The persist function libpmem2 chose for the mapping: cache-line flushes on a <see cref="PersistentMappingMode.SharedSync"/> mapping, <c>msync</c> otherwise.</summary>
    Libpmem2,
}
