using System.Buffers;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace AllocHosting;

/// <summary>
/// Reads the request body as JSON (<see cref="IRequestBuffers.ReadJsonAsync{T}(JsonTypeInfo{T}, CancellationToken)"/>):
/// the body is read whole into request memory (<see cref="IRequestBuffers.ReadBodySequenceAsync"/>), then
/// deserialised by a <see cref="Utf8JsonReader"/> over its segments, with no copy of the body on the GC heap.
/// </summary>
/// <remarks>
/// Strict: exactly one JSON value, optionally surrounded by whitespace (and comments, when the options skip
/// them). An empty, truncated or malformed body, trailing content, or a value the type cannot take becomes a
/// <see cref="RequestBodyJsonException"/> (400). The content type is not checked: any body is parsed as UTF-8 JSON.
/// </remarks>
internal static class RequestJsonReader
{
    private const string InvalidBody = "The request body is not valid JSON for the expected type.";

    public static async ValueTask<T?> ReadAsync<T>(IRequestBuffers buffers, JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(typeInfo);
        ReadOnlySequence<byte> body = await buffers.ReadBodySequenceAsync(cancellationToken).ConfigureAwait(false);
        return Deserialize(body, typeInfo);
    }

    /// <summary>Deserialises exactly one value of <typeparamref name="T"/> from <paramref name="body"/>.</summary>
    /// <exception cref="RequestBodyJsonException">The body is not one JSON value of <typeparamref name="T"/>.</exception>
    public static T? Deserialize<T>(ReadOnlySequence<byte> body, JsonTypeInfo<T> typeInfo)
    {
        JsonSerializerOptions options = typeInfo.Options;
        var reader = new Utf8JsonReader(body, new JsonReaderOptions
        {
            AllowTrailingCommas = options.AllowTrailingCommas,
            CommentHandling = options.ReadCommentHandling,
            MaxDepth = options.MaxDepth,
        });
        try
        {
            T? value = JsonSerializer.Deserialize(ref reader, typeInfo);

            // The serialiser stops after one value; anything but whitespace (or skipped comments) after it is an error.
            if (reader.Read())
            {
                throw new JsonException($"Unexpected content after the JSON value at byte {reader.TokenStartIndex}.");
            }

            return value;
        }
        catch (JsonException error)
        {
            throw new RequestBodyJsonException(InvalidBody, error);
        }
    }
}
