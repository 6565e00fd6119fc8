using System.Buffers.Binary;

namespace AllocHosting.Allocators;

/// <summary>
/// The on-file format of a <see cref="PersistentHeap"/>, version 1: the file header, the block
/// headers and their checks, read and written in one place.
/// </summary>
/// <remarks>
/// <para>
/// <b>File header</b> (the first 4 KiB, little-endian): magic (8 bytes) · version (4) · header
/// length (4, = 4096) · file length (8) · data start (8, = 4096) · reserved (24, zero) · checksum
/// (8, FNV-1a 64 of bytes 0–55) · root offset (8, at byte 64). The root is not under the checksum: it
/// changes with one aligned 8-byte store, which neither a crash nor a flush can tear.
/// </para>
/// <para>
/// <b>Blocks</b> tile the data area from the data start to the file's end: each starts with a
/// 16-byte header, its <em>tag</em> (8 bytes: size in 16-byte units in bits 24–63, state in bits
/// 20–23, a 20-bit check of offset, size and state in bits 0–19) and, for a live block, its usable
/// size (8 bytes). The payload follows the header. Every change of the heap's shape commits with
/// one aligned 8-byte store of one tag, so a crash leaves either the old or the new tiling; the
/// check catches a header that was never written or was overwritten (a stray store by the application).
/// </para>
/// </remarks>
internal static class PersistentHeapLayout
{
    public const ulong Magic = 0x3150414548504841;   // "AHPHEAP1" as little-endian bytes
    public const uint Version = 1;
    public const int HeaderLength = 4096;
    public const long DataStart = HeaderLength;
    public const int ChecksummedLength = 56;
    public const int RootOffset = 64;

    public const int BlockHeaderLength = 16;
    public const long Granule = 16;
    public const long MinimumBlock = 32;

    public const ulong StateFree = 1;
    public const ulong StateLive = 2;

    /// <summary>The largest file: block sizes are 40-bit counts of 16-byte units (16 TiB).</summary>
    public const long MaximumLength = (1L << 40) * Granule;

    private const int SizeShift = 24;
    private const int StateShift = 20;
    private const ulong CheckMask = (1UL << StateShift) - 1;

    /// <summary>The tag of a block at <paramref name="offset"/> of <paramref name="size"/> bytes (a multiple of 16) in <paramref name="state"/>.</summary>
    public static ulong Tag(long offset, long size, ulong state)
    {
        ulong units = (ulong)size / (ulong)Granule;
        return (units << SizeShift) | (state << StateShift) | Check(offset, units, state);
    }

    /// <summary>Decodes a tag read at <paramref name="offset"/>; false when its check does not match or its state is unknown.</summary>
    public static bool TryDecode(long offset, ulong tag, out long size, out ulong state)
    {
        ulong units = tag >> SizeShift;
        state = (tag >> StateShift) & 0xF;
        size = (long)(units * (ulong)Granule);
        return state is StateFree or StateLive && (tag & CheckMask) == Check(offset, units, state);
    }

    /// <summary>FNV-1a 64 of <paramref name="bytes"/>.</summary>
    public static ulong Checksum(ReadOnlySpan<byte> bytes)
    {
        ulong hash = 0xCBF29CE484222325;
        foreach (byte b in bytes)
        {
            hash = (hash ^ b) * 0x100000001B3;
        }

        return hash;
    }

    /// <summary>Writes a version-1 header for a file of <paramref name="fileLength"/> bytes (root zero).</summary>
    public static void WriteHeader(Span<byte> header, long fileLength)
    {
        header[..HeaderLength].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(header, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], Version);
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], HeaderLength);
        BinaryPrimitives.WriteInt64LittleEndian(header[16..], fileLength);
        BinaryPrimitives.WriteInt64LittleEndian(header[24..], DataStart);
        BinaryPrimitives.WriteUInt64LittleEndian(header[ChecksummedLength..], Checksum(header[..ChecksummedLength]));
    }

    /// <summary>
    /// Checks a header read from <paramref name="path"/> (<paramref name="fileLength"/> bytes): the
    /// magic, the version, the checksum, the recorded lengths and the root. Throws
    /// <see cref="InvalidDataException"/> naming the file and what is wrong; reads only.
    /// </summary>
    public static void Validate(ReadOnlySpan<byte> header, long fileLength, string path)
    {
        if (fileLength < HeaderLength)
        {
            throw new InvalidDataException(
                $"'{path}' is not a persistent heap or is truncated: it has {fileLength} bytes, fewer than the {HeaderLength}-byte header.");
        }

        ulong magic = BinaryPrimitives.ReadUInt64LittleEndian(header);
        if (magic != Magic)
        {
            throw new InvalidDataException($"'{path}' is not a persistent heap: its first 8 bytes are 0x{magic:X16}, not the heap's magic 0x{Magic:X16}.");
        }

        uint version = BinaryPrimitives.ReadUInt32LittleEndian(header[8..]);
        if (version > Version)
        {
            throw new InvalidDataException(
                $"'{path}' was written by a newer PersistentHeap (format version {version}); this build reads version {Version} only. The file was not changed.");
        }

        if (version != Version)
        {
            throw new InvalidDataException($"'{path}' has format version {version}, which no PersistentHeap ever wrote (this build reads version {Version}).");
        }

        ulong stored = BinaryPrimitives.ReadUInt64LittleEndian(header[ChecksummedLength..]);
        ulong computed = Checksum(header[..ChecksummedLength]);
        if (stored != computed)
        {
            throw new InvalidDataException($"'{path}' has a corrupted header: its checksum is 0x{stored:X16}, its contents give 0x{computed:X16}. The file was not changed.");
        }

        uint headerLength = BinaryPrimitives.ReadUInt32LittleEndian(header[12..]);
        long recordedLength = BinaryPrimitives.ReadInt64LittleEndian(header[16..]);
        long dataStart = BinaryPrimitives.ReadInt64LittleEndian(header[24..]);
        if (headerLength != HeaderLength || dataStart != DataStart)
        {
            throw new InvalidDataException($"'{path}' has an unknown layout (header length {headerLength}, data start {dataStart}; version {Version} has {HeaderLength} and {DataStart}).");
        }

        if (recordedLength != fileLength)
        {
            throw new InvalidDataException(recordedLength > fileLength
                ? $"'{path}' is truncated: the heap was created with {recordedLength} bytes, the file has {fileLength}. The file was not changed."
                : $"'{path}' was extended: the heap was created with {recordedLength} bytes, the file has {fileLength}. The file was not changed.");
        }

        long root = BinaryPrimitives.ReadInt64LittleEndian(header[RootOffset..]);
        if (root != 0 && (root < DataStart || root >= fileLength))
        {
            throw new InvalidDataException($"'{path}' has a corrupted root offset {root}: it must be 0 or lie in the data area ({DataStart} to {fileLength - 1}).");
        }
    }

    // A 20-bit mix of where the block is, how large and in which state: a header copied to another
    // offset, a stale header or zeroed memory does not pass.
    private static ulong Check(long offset, ulong units, ulong state)
    {
        ulong x = ((ulong)offset * 0x9E3779B97F4A7C15) ^ (units * 0xC2B2AE3D27D4EB4F) ^ (state * 0x165667B19E3779F9) ^ 0x5A5A5A5A;
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9;
        x ^= x >> 32;
        return (x & CheckMask) | 1;   // never zero: an all-zero word is never a valid tag
    }
}
