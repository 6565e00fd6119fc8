using static AllocHosting.Allocators.PersistentHeapLayout;

namespace AllocHosting.Allocators;

// Creating a heap file, and opening one: the header check, the scan that validates every block
// header before anything is written, and the recovery that merges adjacent free blocks.
public sealed unsafe partial class PersistentHeap
{
    /// <summary>
    /// Creates a heap in a new file of <paramref name="size"/> bytes (rounded up to the page size;
    /// the first 4 KiB hold the header, the rest is one free block).
    /// </summary>
    /// <param name="path">The file; it must not exist.</param>
    /// <param name="size">The file's length: at least 8 KiB, at most 16 TiB.</param>
    /// <param name="useLibpmem2">Whether to use libpmem2 when it is present (see <see cref="PersistentMemorySource"/>).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is below 8 KiB or above 16 TiB.</exception>
    /// <exception cref="IOException">The file exists, or cannot be created or mapped.</exception>
    public static PersistentHeap Create(string path, long size, bool useLibpmem2 = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (size < 2 * HeaderLength || size > MaximumLength)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"A persistent heap file has from {2 * HeaderLength} bytes (a header page and a data page) to {MaximumLength} bytes.");
        }

        PersistentMemorySource source = PersistentMemorySource.Create(path, size, useLibpmem2);
        try
        {
            // The block first, the header (with the magic) last: a file whose creation was cut short
            // has no magic, and opening it says it is not a heap.
            byte* start = source.Address;
            long length = source.Length;
            *(ulong*)(start + DataStart) = Tag(DataStart, length - DataStart, StateFree);
            source.Flush(start + DataStart, BlockHeaderLength);
            WriteHeader(new Span<byte>(start, HeaderLength), length);
            source.Flush(start, HeaderLength);

            var heap = new PersistentHeap(source);
            heap.AddFree(DataStart, length - DataStart);
            return heap;
        }
        catch
        {
            source.Dispose();
            File.Delete(path);
            throw;
        }
    }

    /// <summary>
    /// Opens a heap file: checks its header and every block header (writing nothing until all
    /// pass), then merges adjacent free blocks left by a free that a crash cut short.
    /// </summary>
    /// <param name="path">The file.</param>
    /// <param name="useLibpmem2">Whether to use libpmem2 when it is present.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a heap, is truncated or extended, was written by a newer version, or is corrupted; the message says which, and the file was not changed.</exception>
    /// <exception cref="IOException">The file is open elsewhere (it is locked while a heap has it), or cannot be mapped.</exception>
    public static PersistentHeap Open(string path, bool useLibpmem2 = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        long length = ReadAndValidateHeader(path);
        PersistentMemorySource source = PersistentMemorySource.Open(path, useLibpmem2);
        try
        {
            if (source.Length != length)
            {
                throw new InvalidDataException($"'{path}' changed length while it was being opened ({length}, then {source.Length} bytes).");
            }

            var heap = new PersistentHeap(source);
            heap.ValidateBlocks();
            heap.Recover();
            return heap;
        }
        catch
        {
            source.Dispose();
            throw;
        }
    }

    // Reads the header page with an ordinary read (nothing is mapped before the header is known to be
    // a heap's) and validates it; returns the file's length.
    private static long ReadAndValidateHeader(string path)
    {
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = RandomAccess.GetLength(file);
        byte[] header = new byte[HeaderLength];
        int read = 0;
        while (read < header.Length && read < length)
        {
            int n = RandomAccess.Read(file, header.AsSpan(read), read);
            if (n == 0)
            {
                break;
            }

            read += n;
        }

        PersistentHeapLayout.Validate(header, read < HeaderLength ? read : length, path);
        return length;
    }

    // First pass, reads only: every reachable block header has a valid tag, a size that stays in the
    // file, and (live blocks) a usable size that fits. Throws before the recovery writes anything.
    private void ValidateBlocks()
    {
        byte* start = _base;
        long offset = DataStart;
        while (offset < _length)
        {
            ulong tag = *(ulong*)(start + offset);
            if (!TryDecode(offset, tag, out long size, out ulong state) || size < MinimumBlock || size > _length - offset)
            {
                throw new InvalidDataException(
                    $"'{_source.Path}' is corrupted: the block header at offset {offset} (tag 0x{tag:X16}) is not valid. The file was not changed.");
            }

            if (state == StateLive)
            {
                long usable = *(long*)(start + offset + sizeof(ulong));
                if (usable <= 0 || usable % Granule != 0 || usable > size - BlockHeaderLength)
                {
                    throw new InvalidDataException(
                        $"'{_source.Path}' is corrupted: the live block at offset {offset} ({size} bytes) records a usable size of {usable}. The file was not changed.");
                }
            }

            offset += size;
        }
    }

    // Second pass: rebuilds the in-memory index, merging each run of adjacent free blocks into its
    // first (one committed tag store per run: a free cut short between its commit and its merges).
    private void Recover()
    {
        byte* start = _base;
        long offset = DataStart;
        long runStart = -1;
        long runSize = 0;
        int runBlocks = 0;
        while (offset < _length)
        {
            TryDecode(offset, *(ulong*)(start + offset), out long size, out ulong state);
            if (state == StateFree)
            {
                if (runStart < 0)
                {
                    runStart = offset;
                    runSize = 0;
                    runBlocks = 0;
                }

                runSize += size;
                runBlocks++;
            }
            else
            {
                EndFreeRun(start, runStart, runSize, runBlocks);
                runStart = -1;
                long usable = *(long*)(start + offset + sizeof(ulong));
                _live.Add(offset, usable);
                _bytesInUse += usable;
            }

            offset += size;
        }

        EndFreeRun(start, runStart, runSize, runBlocks);
        _peakBytesInUse = _bytesInUse;
    }

    private void EndFreeRun(byte* start, long runStart, long runSize, int runBlocks)
    {
        if (runStart < 0)
        {
            return;
        }

        if (runBlocks > 1)
        {
            WriteTag(start, runStart, runSize, StateFree);
            RecoveredMerges += runBlocks - 1;
        }

        AddFree(runStart, runSize);
    }

    /// <summary>
    /// Checks the file against the in-memory index (for tests): the blocks tile the data area, every
    /// tag is valid, no two free blocks are adjacent, and the free and live blocks in the file are
    /// exactly those of the index. Throws <see cref="InvalidOperationException"/> naming the first fault.
    /// </summary>
    internal void Validate()
    {
        byte* start = Base;
        long offset = DataStart;
        bool previousFree = false;
        int free = 0;
        int live = 0;
        long bytesInUse = 0;
        while (offset < _length)
        {
            ulong tag = *(ulong*)(start + offset);
            if (!TryDecode(offset, tag, out long size, out ulong state) || size < MinimumBlock || size > _length - offset)
            {
                throw new InvalidOperationException($"Invalid block header at offset {offset}: 0x{tag:X16}.");
            }

            if (state == StateFree)
            {
                if (previousFree)
                {
                    throw new InvalidOperationException($"The free block at offset {offset} follows another free block.");
                }

                if (!_freeSizeByOffset.TryGetValue(offset, out long indexed) || indexed != size || !_freeBySize.Contains((size, offset))
                    || !_freeOffsetByEnd.TryGetValue(offset + size, out long byEnd) || byEnd != offset)
                {
                    throw new InvalidOperationException($"The free block at offset {offset} ({size} bytes) is not indexed as such.");
                }

                free++;
            }
            else
            {
                long usable = *(long*)(start + offset + sizeof(ulong));
                if (!_live.TryGetValue(offset, out long indexed) || indexed != usable || usable > size - BlockHeaderLength)
                {
                    throw new InvalidOperationException($"The live block at offset {offset} ({size} bytes, usable {usable}) is not indexed as such.");
                }

                live++;
                bytesInUse += usable;
            }

            previousFree = state == StateFree;
            offset += size;
        }

        if (free != _freeSizeByOffset.Count || free != _freeBySize.Count || free != _freeOffsetByEnd.Count || live != _live.Count || bytesInUse != _bytesInUse)
        {
            throw new InvalidOperationException(
                $"The index holds {_freeSizeByOffset.Count} free and {_live.Count} live blocks ({_bytesInUse} bytes in use); the file {free} and {live} ({bytesInUse} bytes).");
        }
    }
}
