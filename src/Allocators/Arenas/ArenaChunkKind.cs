namespace AllocHosting.Allocators;

/// <summary>Which allocator carves an <see cref="ArenaChunk"/>.</summary>
public enum ArenaChunkKind
{
    /// <summary>A <see cref="BumpAllocator"/>: lock-free concurrent renting by a compare-exchange on the offset.</summary>
    Bump,

    /// <summary>A <see cref="BitSetAllocator"/>: renting takes a short lock.</summary>
    BitSet,
}
