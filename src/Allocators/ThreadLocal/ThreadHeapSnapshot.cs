using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>
/// The calling thread's heap of a <see cref="ThreadLocalAllocator"/> at one moment (see
/// <see cref="ThreadLocalAllocator.GetCurrentThreadHeapSnapshot"/>): where its memory comes from and
/// how much it maps.
/// </summary>
/// <param name="Policy">The NUMA policy of the heap's memory, chosen on the thread's first allocation (<see cref="ThreadLocalAllocatorOptions.NumaPolicy"/>, the selector, or the thread's node).</param>
/// <param name="IsMemoryMapped">Whether the heap's segments are mapped by a <see cref="MemoryMapSource"/>, which applies <paramref name="Policy"/>; false when they come from a <see cref="NativeMemorySource"/> (<see cref="ThreadLocalAllocatorOptions.UseMemoryMap"/> off, or no memory mapping on this platform), where the policy is not applied.</param>
/// <param name="SegmentCount">Segments the heap holds (each <see cref="ThreadLocalAllocatorOptions.SegmentSize"/> bytes).</param>
/// <param name="MappedBytes">Bytes of those segments.</param>
public readonly record struct ThreadHeapSnapshot(NumaPolicy Policy, bool IsMemoryMapped, int SegmentCount, long MappedBytes);
