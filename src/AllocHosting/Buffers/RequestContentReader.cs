namespace AllocHosting;

/// <summary>
/// Reads an <see cref="HttpContent"/> (an upstream response) into request memory
/// (<see cref="IRequestBuffers.ReadContentAsync"/>).
/// </summary>
/// <remarks>
/// The bytes go from the content's stream into a <see cref="RequestBufferWriter"/> as they arrive, then are
/// joined once into one contiguous block (no join when they fit in the first segment). <c>Content-Length</c> is
/// a hint only: one announced beyond the limit is refused before reading, one within it sizes the first
/// segment (<see cref="RequestBufferWriter.ReserveAnnounced"/>: at most one arena chunk, so a lying header cannot
/// make the request rent much more than it receives), and every byte received is counted against the limit. At most one byte beyond the
/// limit is read before refusing.
/// </remarks>
internal static class RequestContentReader
{
    public static async ValueTask<ReadOnlyMemory<byte>> ReadAsync(IRequestBuffers buffers, HttpContent content, long maxBytes, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(content);
        ArgumentOutOfRangeException.ThrowIfNegative(maxBytes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxBytes, (long)int.MaxValue);
        if (content.Headers.ContentLength is long announced && announced > maxBytes)
        {
            ThrowTooLarge(maxBytes, announced);
        }

        RequestBufferWriter writer = buffers.CreateWriter();   // refuses a request that has ended, even for an empty content
        if (content.Headers.ContentLength is long length)
        {
            if (length == 0)
            {
                // HttpClient reads no more than an announced length: nothing to rent.
                return ReadOnlyMemory<byte>.Empty;
            }

            // The announced length and one spare byte for the read that finds the end, so an honest response of up
            // to a chunk arrives in one segment and needs no join.
            await writer.ReserveAnnouncedAsync(length + 1, cancellationToken).ConfigureAwait(false);
        }

        Stream stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            while (true)
            {
                Memory<byte> room = await writer.GetMemoryAsync(1, cancellationToken).ConfigureAwait(false);
                long allowed = maxBytes - writer.WrittenCount + 1;   // one byte beyond the limit tells that it is exceeded
                if (room.Length > allowed)
                {
                    room = room[..(int)allowed];
                }

                int read = await stream.ReadAsync(room, cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    break;
                }

                writer.Advance(read);
                if (writer.WrittenCount > maxBytes)
                {
                    ThrowTooLarge(maxBytes, announced: null);
                }
            }
        }

        return await writer.GetWrittenMemoryAsync(cancellationToken).ConfigureAwait(false);
    }

    private static void ThrowTooLarge(long maxBytes, long? announced) =>
        throw new InvalidDataException(
            announced is long length
                ? $"The content announces {length} bytes (Content-Length), more than the limit of {maxBytes} bytes."
                : $"The content is larger than the limit of {maxBytes} bytes.");
}
