namespace AllocHosting.Allocators;

/// <summary>A live block of a <see cref="PersistentHeap"/>: where it is and how many bytes it holds.</summary>
/// <param name="Offset">The block's offset in the file (its first byte; stable across runs).</param>
/// <param name="UsableSize">The bytes the block holds: its size rounded up to 16, as recorded in the file.</param>
public readonly record struct PersistentHeapBlock(long Offset, long UsableSize);
