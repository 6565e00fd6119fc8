using System.Buffers.Binary;
using static AllocHosting.Allocators.Tests.PersistentHeapFiles;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Issue 14 part 2: the persistent heap on tmpfs and on the disk. Reopening finds every committed block
/// with its contents and the root; bad input is refused; a file that is not a valid heap (foreign,
/// truncated, extended, newer version, corrupted header or block header) is refused with
/// <see cref="InvalidDataException"/> and left byte for byte as it was.
/// </summary>
public unsafe class PersistentHeapTests
{
    private const long HeapSize = 1 << 20;

    // Model: a dictionary offset → (size, generation) of the blocks the test keeps. After a session
    // of allocations, writes, flushes and frees, a reopened heap must list exactly those blocks, each
    // with its usable size and its contents, and the root must be where it was set.
    [LinuxTheory]
    [MemberData(nameof(DirectoriesAndFlush), MemberType = typeof(PersistentHeapFiles))]
    public void Reopening_finds_every_committed_block_with_its_contents_and_the_root(string directory, bool useLibpmem2)
    {
        string path = NewPath(directory);
        try
        {
            var random = new Random(14);
            var kept = new Dictionary<long, (long Size, long Generation)>();
            long root;
            // Every operation flushes two or three ranges: on a disk each is a write to the device.
            int operations = directory == SharedMemory ? 300 : 60;
            using (var heap = PersistentHeap.Create(path, HeapSize, useLibpmem2))
            {
                for (int i = 0; i < operations; i++)
                {
                    long size = random.Next(1, 3000);
                    nuint alignment = (nuint)1 << random.Next(0, 9);
                    long offset = heap.AllocateOffset((nuint)size, alignment);
                    Assert.Equal(0, offset % (long)Math.Max(alignment, 16));
                    Fill(heap.ToPointer(offset), offset, i, size);
                    heap.Flush(offset, (nuint)size);
                    kept.Add(offset, (size, i));
                    if (random.Next(3) == 0)
                    {
                        long victim = kept.Keys.ElementAt(random.Next(kept.Count));
                        heap.FreeOffset(victim, (nuint)kept[victim].Size);
                        kept.Remove(victim);
                    }
                }

                root = kept.Keys.Min();
                heap.Root = root;
                heap.Validate();
            }

            using (var reopened = PersistentHeap.Open(path, useLibpmem2))
            {
                reopened.Validate();
                Assert.Equal(root, reopened.Root);
                Assert.Equal(
                    kept.OrderBy(k => k.Key).Select(k => new PersistentHeapBlock(k.Key, (k.Value.Size + 15) / 16 * 16)),
                    reopened.GetLiveBlocks());
                foreach ((long offset, (long size, long generation)) in kept)
                {
                    Assert.Equal(-1, FirstMismatch(reopened.ToPointer(offset), offset, generation, size));
                }

                Assert.Equal(kept.Values.Sum(v => (v.Size + 15) / 16 * 16), reopened.Statistics.BytesInUse);

                // Everything freed, the whole data area is one block again.
                foreach ((long offset, (long size, _)) in kept)
                {
                    reopened.FreeOffset(offset, (nuint)size);
                }

                reopened.Validate();
                long whole = reopened.AllocateOffset((nuint)(reopened.Capacity - 16));
                Assert.Equal(4096 + 16, whole);
            }
        }
        finally
        {
            Delete(path);
        }
    }

    [LinuxTheory]
    [MemberData(nameof(Directories), MemberType = typeof(PersistentHeapFiles))]
    public void The_source_reports_its_mapping_and_flush_method(string directory)
    {
        string path = NewPath(directory);
        try
        {
            using (var source = PersistentMemorySource.Create(path, 10_000, useLibpmem2: false))
            {
                Assert.Equal(12_288, source.Length);
                Assert.Equal(PersistentFlushMethod.Msync, source.FlushMethod);
                Assert.NotNull(source.FallbackReason);
                if (source.MappingMode == PersistentMappingMode.Shared)
                {
                    Assert.Contains("MAP_SYNC", source.FallbackReason, StringComparison.Ordinal);
                }

                source.ToPointer(5000)[0] = 42;
                source.Flush(5000, 1);
                source.Flush(source.Address + 4095, 2);   // crosses a page boundary
                source.Flush(0, 0);
                Assert.Throws<ArgumentOutOfRangeException>(() => source.Flush(12_000, 289));
                Assert.Throws<ArgumentOutOfRangeException>(() => source.Flush(-1, 1));
                Assert.Throws<ArgumentOutOfRangeException>(() => source.ToPointer(12_288));
            }

            Assert.Equal(42, File.ReadAllBytes(path)[5000]);
            using var reopened = PersistentMemorySource.Open(path);
            Assert.Equal(42, reopened.ToPointer(5000)[0]);
            if (Interop.Libpmem2.TryLoad(out _))
            {
                Assert.Equal(PersistentFlushMethod.Libpmem2, reopened.FlushMethod);
                reopened.ToPointer(6000)[0] = 7;
                reopened.Flush(6000, 1);
            }
            else
            {
                Assert.Equal(PersistentFlushMethod.Msync, reopened.FlushMethod);
            }
        }
        finally
        {
            Delete(path);
        }
    }

    [DaxFact]
    public void On_a_dax_file_system_the_source_maps_with_MAP_SYNC()
    {
        string path = NewPath(DaxFactAttribute.FindDaxMount()!);
        try
        {
            using (var source = PersistentMemorySource.Create(path, 1 << 20, useLibpmem2: false))
            {
                Assert.Equal(PersistentMappingMode.SharedSync, source.MappingMode);
            }

            File.Delete(path);
            long offset;
            using (var heap = PersistentHeap.Create(path, 1 << 20))
            {
                offset = heap.AllocateOffset(100);
                Fill(heap.ToPointer(offset), offset, 1, 100);
                heap.Flush(offset, 100);
            }

            using var reopened = PersistentHeap.Open(path);
            Assert.Equal(-1, FirstMismatch(reopened.ToPointer(offset), offset, 1, 100));
        }
        finally
        {
            Delete(path);
        }
    }

    [LinuxFact]
    public void Bad_arguments_are_refused_and_change_nothing()
    {
        string path = NewPath();
        try
        {
            Assert.Throws<ArgumentOutOfRangeException>(() => PersistentHeap.Create(path, 4096));
            Assert.False(File.Exists(path));
            Assert.Throws<FileNotFoundException>(() => PersistentHeap.Open(path));

            using var heap = PersistentHeap.Create(path, 64 * 1024);
            Assert.Throws<IOException>(() => PersistentHeap.Create(path, 64 * 1024));   // exists
            Assert.Throws<IOException>(() => PersistentHeap.Open(path));                // locked by this heap

            long offset = heap.AllocateOffset(100, 64);
            long other = heap.AllocateOffset(50);
            AllocatorStatistics before = heap.Statistics;
            Assert.Throws<ArgumentOutOfRangeException>(() => heap.AllocateOffset(0));
            Assert.Throws<ArgumentException>(() => heap.AllocateOffset(10, 3));
            Assert.Throws<ArgumentException>(() => heap.FreeOffset(offset + 16, 100));   // interior
            Assert.Throws<ArgumentException>(() => heap.FreeOffset(offset, 200));        // larger than usable
            Assert.Throws<ArgumentException>(() => heap.FreeOffset(offset, 10));         // smaller usable size
            Assert.Throws<ArgumentException>(() => heap.FreeOffset(100, 10));            // in the header
            Assert.Throws<ArgumentException>(() => heap.FreeOffset(1 << 30, 10));        // past the end
            Assert.Throws<ArgumentException>(() => heap.ToPointer(0));
            Assert.Throws<ArgumentException>(() => heap.Flush(offset, 1 << 20));
            Assert.Throws<ArgumentOutOfRangeException>(() => heap.Root = 12);
            Assert.Throws<ArgumentOutOfRangeException>(() => heap.Root = 64 * 1024);
            Assert.Throws<AllocatorExhaustedException>(() => heap.AllocateOffset(64 * 1024));
            Assert.False(heap.TryAllocateOffset(60 * 1024, 16, out long none));
            Assert.Equal(0, none);
            Assert.Equal(before.BytesInUse, heap.Statistics.BytesInUse);
            heap.Validate();

            heap.FreeOffset(offset, 97);   // same usable size: tolerated
            Assert.Throws<ArgumentException>(() => heap.FreeOffset(offset, 100));   // double free
            Assert.Equal(other, heap.ToOffset(heap.ToPointer(other)));
            heap.Validate();
        }
        finally
        {
            Delete(path);
        }
    }

    [LinuxFact]
    public void A_disposed_heap_refuses_every_use()
    {
        string path = NewPath();
        try
        {
            var heap = PersistentHeap.Create(path, 64 * 1024);
            long offset = heap.AllocateOffset(10);
            heap.Dispose();
            Assert.Throws<ObjectDisposedException>(() => heap.AllocateOffset(10));
            Assert.Throws<ObjectDisposedException>(() => heap.TryAllocateOffset(10, 16, out _));
            Assert.Throws<ObjectDisposedException>(() => heap.FreeOffset(offset, 10));
            Assert.Throws<ObjectDisposedException>(() => heap.Root);
            bool owns = heap.Owns((byte*)4096);
            Assert.False(owns);

            using var reopened = PersistentHeap.Open(path);
            Assert.Equal([new PersistentHeapBlock(offset, 16)], reopened.GetLiveBlocks());
        }
        finally
        {
            Delete(path);
        }
    }

    public static TheoryData<string, string> BadFiles => new()
    {
        { "foreign", "is not a persistent heap" },
        { "empty", "fewer than the 4096-byte header" },
        { "short", "fewer than the 4096-byte header" },
        { "truncated", "is truncated" },
        { "extended", "was extended" },
        { "newer-version", "newer PersistentHeap (format version 2)" },
        { "header-checksum", "corrupted header" },
        { "root", "corrupted root offset" },
        { "block-header", "the block header at offset" },
        { "usable-size", "records a usable size" },
    };

    // Each bad file must be refused with InvalidDataException naming what is wrong, with the file's
    // bytes (hashed before and after) unchanged.
    [LinuxTheory]
    [MemberData(nameof(BadFiles))]
    public void A_file_that_is_not_a_valid_heap_is_refused_and_left_unchanged(string kind, string message)
    {
        string path = NewPath();
        try
        {
            MakeBadFile(path, kind);
            string before = Hash(path);
            var error = Assert.Throws<InvalidDataException>(() => PersistentHeap.Open(path));
            Assert.Contains(message, error.Message, StringComparison.Ordinal);
            Assert.Contains(path, error.Message, StringComparison.Ordinal);
            Assert.Equal(before, Hash(path));
        }
        finally
        {
            Delete(path);
        }
    }

    private static void MakeBadFile(string path, string kind)
    {
        if (kind is "foreign" or "empty" or "short")
        {
            byte[] bytes = new byte[kind switch { "foreign" => 16384, "empty" => 0, _ => 100 }];
            new Random(1).NextBytes(bytes);
            File.WriteAllBytes(path, bytes);
            return;
        }

        long live;
        using (var heap = PersistentHeap.Create(path, 64 * 1024))
        {
            heap.AllocateOffset(1000);
            live = heap.AllocateOffset(2000);
            heap.AllocateOffset(100);
        }

        using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        byte[] header = new byte[4096];
        file.ReadExactly(header);
        switch (kind)
        {
            case "truncated":
                file.SetLength(32 * 1024);
                return;
            case "extended":
                file.SetLength(68 * 1024);
                return;
            case "newer-version":
                BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), 2);
                break;
            case "header-checksum":
                header[40] ^= 1;   // a reserved byte under the checksum
                break;
            case "root":
                BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(64), 100);
                break;
            case "block-header":
                WriteAt(file, live - 16, BitConverter.GetBytes(0x1234_5678_9ABC_DEF0UL));
                return;
            case "usable-size":
                WriteAt(file, live - 8, BitConverter.GetBytes(1L << 20));
                return;
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "no such bad file");
        }

        WriteAt(file, 0, header);
    }

    private static void WriteAt(FileStream file, long offset, byte[] bytes)
    {
        file.Position = offset;
        file.Write(bytes);
    }
}
