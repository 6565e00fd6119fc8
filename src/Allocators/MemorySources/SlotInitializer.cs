namespace AllocHosting.Allocators.MemorySources;

/// <summary>Prepares one slot of an <see cref="ArenaMemorySource"/> once, before the arena links it into its free list.</summary>
/// <param name="slot">The first byte of the slot.</param>
/// <param name="slotSize">The slot's size in bytes (<see cref="ArenaMemorySource.SlotSize"/>).</param>
/// <remarks>The first 8 bytes of the slot are overwritten afterwards while the slot is free.</remarks>
public unsafe delegate void SlotInitializer(byte* slot, nuint slotSize);
