using System.Buffers;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>Every allocator type of the suite, by name, for theories that hold for all of them.</summary>
public static class AllocatorFactories
{
    private static readonly Dictionary<string, Func<AllocatorBase>> Factories = new()
    {
        ["bump"] = () => new BumpAllocator(new NativeMemorySource(), 64 * 1024),
        ["bitset"] = () => new BitSetAllocator(new NativeMemorySource(), blockSize: 64, memorySize: 64 * 1024),
        ["tree"] = () => new MultipleBinarySearchTreeAllocator(new NativeMemorySource(), 64 * 1024),

        // Small regions and a limit, so that sequences grow it by several regions and reach exhaustion.
        ["btree"] = () => new BTreeAllocator(new NativeMemorySource(), 16 * 1024, 256 * 1024),
        ["memorymap"] = () => new MemoryMapAllocator(),
        ["threadlocal"] = () => new ThreadLocalAllocator(),
        ["numaheap"] = () => new NumaHeapAllocator(),
        ["native"] = () => new NativeMemoryAllocator(),
        ["native-tracked"] = () => new NativeMemoryAllocator(trackOwnership: true),
        ["memorypool"] = () => new MemoryPoolAllocator(MemoryPool<byte>.Shared),
        // Its own thread-local allocator: its statistics add the thread-local one's, and
        // ThreadLocalAllocator.Shared's change whenever a test running beside it allocates there (a
        // model test once saw a refused call "change" them).
        ["switchable"] = () => new SwitchableAllocator(new NativeMemoryAllocator(trackOwnership: true), new ThreadLocalAllocator()),
        ["context-short"] = () => ContextAllocator.ShortLived(new BumpAllocator(new NativeMemorySource(), 64 * 1024)),
        ["context-short-concurrent"] = () => ContextAllocator.ShortLived(new BumpAllocator(new NativeMemorySource(), 64 * 1024), threadSafe: true),
        ["context-medium"] = () => ContextAllocator.MediumLived(new BitSetAllocator(new NativeMemorySource(), blockSize: 64, memorySize: 64 * 1024)),
        ["mimalloc"] = () => ExternalNativeAllocator.Load(NativeAllocatorLibrary.Mimalloc, trackOwnership: true),
        ["jemalloc"] = () => ExternalNativeAllocator.Load(NativeAllocatorLibrary.Jemalloc, trackOwnership: true),
        ["rpmalloc"] = () => ExternalNativeAllocator.Load(NativeAllocatorLibrary.Rpmalloc, trackOwnership: true),
        ["context-long"] = () => ContextAllocator.LongLived(new MultipleBinarySearchTreeAllocator(new NativeMemorySource(), 64 * 1024)),
    };

    /// <summary>The names of every factory, as theory data.</summary>
    public static TheoryData<string> Names => NamesExcept();

    /// <summary>The names of every factory but <paramref name="excluded"/>, as theory data.</summary>
    public static TheoryData<string> NamesExcept(params string[] excluded)
    {
        {
            var data = new TheoryData<string>();
            foreach (string name in Factories.Keys)
            {
                if ((name != "memorymap" || MemoryMapSource.IsSupported) && IsLoadable(name) && !excluded.Contains(name))
                {
                    data.Add(name);
                }
            }

            return data;
        }
    }

    // The external native allocators are listed only where their library loads (their own test classes skip, saying why, elsewhere).
    private static bool IsLoadable(string name) =>
        !Enum.TryParse(name, ignoreCase: true, out NativeAllocatorLibrary library) || ExternalNativeAllocator.TryLoad(library, out _);

    /// <summary>A new allocator of the kind <paramref name="name"/>.</summary>
    public static AllocatorBase Create(string name) => Factories[name]();
}
