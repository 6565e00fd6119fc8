using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace AllocHosting.Tests;

/// <summary>The sample's POST /webhook and its three twins answer the same bytes.</summary>
[Collection(MeterListenerCollection.Name)]
public sealed class SampleWebhookTests(SampleTests.Factory factory) : IClassFixture<SampleTests.Factory>
{
    private static readonly string[] s_variants = ["/webhook", "/webhook/memorystream", "/webhook/arraypool", "/webhook/recyclable"];

    // The sample's fixed key (WebhookPayload.SampleKey).
    private static readonly byte[] s_key = "allochosting-sample-webhook-key"u8.ToArray();

    private readonly HttpClient _client = factory.CreateClient();

    public static TheoryData<string> Variants() => [.. s_variants];

    [Theory]
    [InlineData(8 * 1024, true)]
    [InlineData(8 * 1024, false)]
    [InlineData(320 * 1024, true)]
    [InlineData(320 * 1024, false)]
    public async Task The_four_variants_answer_the_same_summary(int size, bool signed)
    {
        (byte[] body, int items, long quantity, decimal total) = Payload(size);
        string? signature = signed ? Convert.ToHexString(HMACSHA256.HashData(s_key, body)) : null;

        byte[]? first = null;
        foreach (string path in s_variants)
        {
            using HttpResponseMessage response = await PostAsync(path, body, signature);
            byte[] answer = await response.Content.ReadAsByteArrayAsync();

            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{path}: {response.StatusCode} {Encoding.UTF8.GetString(answer)}");
            Assert.Equal("application/json; charset=utf-8", response.Content.Headers.ContentType?.ToString());
            if (first is null)
            {
                first = answer;
                using JsonDocument json = JsonDocument.Parse(answer);
                JsonElement root = json.RootElement;
                Assert.Equal("evt_42", root.GetProperty("id").GetString());
                Assert.Equal("order.created", root.GetProperty("type").GetString());
                Assert.Equal(items, root.GetProperty("items").GetInt32());
                Assert.Equal(quantity, root.GetProperty("quantity").GetInt64());
                Assert.Equal(total, root.GetProperty("total").GetDecimal());
                Assert.Equal(body.Length, root.GetProperty("bytes").GetInt64());
                Assert.Equal(signed, root.GetProperty("signed").GetBoolean());
            }
            else
            {
                Assert.True(first.AsSpan().SequenceEqual(answer), $"{path} answered {Encoding.UTF8.GetString(answer)}, /webhook {Encoding.UTF8.GetString(first)}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task A_wrong_signature_is_refused_with_401(string path)
    {
        (byte[] body, _, _, _) = Payload(8 * 1024);
        byte[] otherBody = [.. body[..^2], (byte)' ', .. body[^2..]];
        string signatureOfAnotherBody = Convert.ToHexString(HMACSHA256.HashData(s_key, otherBody));

        using HttpResponseMessage wrong = await PostAsync(path, body, signatureOfAnotherBody);
        using HttpResponseMessage notHex = await PostAsync(path, body, "not-a-signature");

        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, notHex.StatusCode);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task A_signature_in_lower_case_hex_is_accepted(string path)
    {
        (byte[] body, _, _, _) = Payload(1024);

        using HttpResponseMessage response = await PostAsync(path, body, Convert.ToHexStringLower(HMACSHA256.HashData(s_key, body)));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task An_empty_body_is_a_400_and_its_signature_is_still_checked(string path)
    {
        using HttpResponseMessage unsigned = await PostAsync(path, [], null);
        using HttpResponseMessage signedEmpty = await PostAsync(path, [], Convert.ToHexString(HMACSHA256.HashData(s_key, Array.Empty<byte>())));
        using HttpResponseMessage wronglySigned = await PostAsync(path, [], new string('0', 64));

        Assert.Equal(HttpStatusCode.BadRequest, unsigned.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, signedEmpty.StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, wronglySigned.StatusCode);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task Malformed_json_and_a_null_event_are_400(string path)
    {
        using HttpResponseMessage truncated = await PostAsync(path, """{"id":"evt_1","items":["""u8.ToArray(), null);
        using HttpResponseMessage twoValues = await PostAsync(path, """{"id":"a"} {"id":"b"}"""u8.ToArray(), null);
        using HttpResponseMessage nullEvent = await PostAsync(path, "null"u8.ToArray(), null);

        Assert.Equal(HttpStatusCode.BadRequest, truncated.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, twoValues.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, nullEvent.StatusCode);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task A_body_over_one_MiB_is_a_413(string path)
    {
        (byte[] body, _, _, _) = Payload(1024 * 1024 + 100);

        using HttpResponseMessage response = await PostAsync(path, body, null);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
    }

    private async Task<HttpResponseMessage> PostAsync(string path, byte[] body, string? signature)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new("application/json");
        if (signature is not null)
        {
            request.Headers.Add("X-Signature", signature);
        }

        return await _client.SendAsync(request);
    }

    // A webhook event of at least `size` bytes, and what its summary must say.
    private static (byte[] Body, int Items, long Quantity, decimal Total) Payload(int size)
    {
        var json = new StringBuilder("""{"id":"evt_42","type":"order.created","items":[""");
        int items = 0;
        long quantity = 0;
        decimal total = 0;
        while (json.Length < size - 2)
        {
            int q = items % 5 + 1;
            decimal price = items % 1000 / 100m;
            json.Append(items == 0 ? "" : ",")
                .Append(CultureInfo.InvariantCulture, $$"""{"sku":"SKU-{{items:D5}}","quantity":{{q}},"price":{{price}}}""");
            items++;
            quantity += q;
            total += q * price;
        }

        json.Append("]}");
        return (Encoding.UTF8.GetBytes(json.ToString()), items, quantity, total);
    }
}
