using System.Buffers;
using System.Security.Cryptography;
using System.Text.Json;

namespace AllocHosting.Samples.WebApi;

/// <summary>
/// What the four /webhook variants share once they hold the body: the HMAC-SHA256 check of the optional
/// <c>X-Signature</c> header (hex) with the sample's fixed key, the JSON parse and the summary. Only where the
/// body's bytes live differs between the variants, so they answer the same bytes.
/// </summary>
internal static class WebhookPayload
{
    /// <summary>The largest body accepted (413 beyond).</summary>
    public const int MaxBodyBytes = 1024 * 1024;

    /// <summary>The header that carries the body's HMAC-SHA256, in hex.</summary>
    public const string SignatureHeader = "X-Signature";

    /// <summary>The sample's HMAC key. A real service reads its secret from configuration, never from code.</summary>
    public static ReadOnlySpan<byte> SampleKey => "allochosting-sample-webhook-key"u8;

    /// <summary>The <c>X-Signature</c> header, or <see langword="null"/> when the request has none.</summary>
    public static string? SignatureOf(HttpRequest request) =>
        request.Headers.TryGetValue(SignatureHeader, out var values) ? values.ToString() : null;

    /// <summary>Checks the signature, parses the event and sums it up.</summary>
    /// <param name="body">The whole body.</param>
    /// <param name="signature">The <c>X-Signature</c> header, if any.</param>
    /// <param name="error">The answer when this returns <see langword="null"/>: 413, 401 or 400.</param>
    /// <returns>The summary, or <see langword="null"/> with <paramref name="error"/> set.</returns>
    public static WebhookSummary? Process(ReadOnlySequence<byte> body, string? signature, out IResult? error)
    {
        if (body.Length > MaxBodyBytes)
        {
            error = TooLarge();
            return null;
        }

        if (signature is not null && !SignatureMatches(body, signature))
        {
            error = Results.Problem("The X-Signature header is not the HMAC-SHA256 of the body.", statusCode: StatusCodes.Status401Unauthorized);
            return null;
        }

        WebhookEvent? webhook;
        try
        {
            var reader = new Utf8JsonReader(body);
            webhook = JsonSerializer.Deserialize(ref reader, WebhookJsonContext.Default.WebhookEvent);
            if (reader.Read())
            {
                throw new JsonException("More than one JSON value.");
            }
        }
        catch (JsonException exception)
        {
            error = Results.Problem($"The body is not a webhook event: {exception.Message}", statusCode: StatusCodes.Status400BadRequest);
            return null;
        }

        if (webhook is null)
        {
            error = Results.Problem("The body is not a webhook event: null.", statusCode: StatusCodes.Status400BadRequest);
            return null;
        }

        long quantity = 0;
        decimal total = 0;
        foreach (WebhookItem item in webhook.Items ?? [])
        {
            quantity += item.Quantity;
            total += item.Quantity * item.Price;
        }

        error = null;
        return new WebhookSummary
        {
            Id = webhook.Id,
            Type = webhook.Type,
            Items = webhook.Items?.Count ?? 0,
            Quantity = quantity,
            Total = total,
            Bytes = body.Length,
            Signed = signature is not null,
        };
    }

    /// <summary>413, for a body over <see cref="MaxBodyBytes"/>.</summary>
    public static IResult TooLarge() =>
        Results.Problem($"The body is larger than {MaxBodyBytes} bytes.", statusCode: StatusCodes.Status413PayloadTooLarge);

    private static bool SignatureMatches(ReadOnlySequence<byte> body, string signature)
    {
        Span<byte> expected = stackalloc byte[HMACSHA256.HashSizeInBytes];
        if (body.IsSingleSegment)
        {
            HMACSHA256.HashData(SampleKey, body.FirstSpan, expected);
        }
        else
        {
            using var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, SampleKey);
            foreach (ReadOnlyMemory<byte> segment in body)
            {
                hmac.AppendData(segment.Span);
            }

            hmac.GetHashAndReset(expected);
        }

        Span<byte> given = stackalloc byte[HMACSHA256.HashSizeInBytes];
        return signature.Length == 2 * HMACSHA256.HashSizeInBytes
            && Convert.FromHexString(signature, given, out _, out int written) == OperationStatus.Done
            && written == given.Length
            && CryptographicOperations.FixedTimeEquals(expected, given);
    }
}
