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
        ["memorymap"] = () => new MemoryMapAllocator(),
        ["threadlocal"] = () => new ThreadLocalAllocator(),
        ["native"] = () => new NativeMemoryAllocator(),
        ["native-tracked"] = () => new NativeMemoryAllocator(trackOwnership: true),
        ["memorypool"] = () => new MemoryPoolAllocator(MemoryPool<byte>.Shared),
        ["switchable"] = () => new SwitchableAllocator(new NativeMemoryAllocator(trackOwnership: true)),
        ["context-short"] = () => ContextAllocator.ShortLived(new BumpAllocator(new NativeMemorySource(), 64 * 1024)),
        ["context-short-concurrent"] = () => ContextAllocator.ShortLived(new BumpAllocator(new NativeMemorySource(), 64 * 1024), threadSafe: true),
        ["context-medium"] = () => ContextAllocator.MediumLived(new BitSetAllocator(new NativeMemorySource(), blockSize: 64, memorySize: 64 * 1024)),
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
                if ((name != "memorymap" || MemoryMapSource.IsSupported) && !excluded.Contains(name))
                {
                    data.Add(name);
                }
            }

            return data;
        }
    }

    /// <summary>A new allocator of the kind <paramref name="name"/>.</summary>
    public static AllocatorBase Create(string name) => Factories[name]();
}
