using System.Globalization;
using System.IO.Compression;
using System.Net;
using System.Text;

namespace AllocHosting.Tests;

/// <summary>The sample's GET /export and its three twins answer the same gzip bytes with a Content-Length.</summary>
[Collection(MeterListenerCollection.Name)]
public sealed class SampleExportTests(SampleTests.Factory factory) : IClassFixture<SampleTests.Factory>
{
    private static readonly string[] s_variants = ["/export", "/export/memorystream", "/export/arraypool", "/export/recyclable"];

    private readonly HttpClient _client = factory.CreateClient();

    public static TheoryData<string> Variants() => [.. s_variants];

    [Theory]
    [InlineData(180)]     // about 8 KiB of CSV
    [InlineData(7_300)]   // about 320 KiB of CSV
    [InlineData(0)]       // the header line alone
    public async Task The_four_variants_answer_the_same_gzip_of_the_expected_csv(int rows)
    {
        string expected = ExpectedCsv(rows);
        byte[]? first = null;
        foreach (string path in s_variants)
        {
            using HttpResponseMessage response = await _client.GetAsync($"{path}?rows={rows}");
            byte[] answer = await response.Content.ReadAsByteArrayAsync();

            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("application/gzip", response.Content.Headers.ContentType?.ToString());
            Assert.Equal("attachment; filename=export.csv.gz", response.Content.Headers.ContentDisposition?.ToString());
            Assert.Equal(answer.Length, response.Content.Headers.ContentLength);
            Assert.Equal(expected, Decompress(answer));
            if (first is null)
            {
                first = answer;
            }
            else
            {
                Assert.True(first.AsSpan().SequenceEqual(answer), $"{path} answered {answer.Length} bytes that differ from /export's {first.Length}");
            }
        }
    }

    [Fact]
    public async Task Sizes_of_the_small_and_large_exports_are_as_the_load_script_says()
    {
        Assert.InRange(Encoding.UTF8.GetByteCount(ExpectedCsv(180)), 7 * 1024, 9 * 1024);
        Assert.InRange(Encoding.UTF8.GetByteCount(ExpectedCsv(7_300)), 300 * 1024, 340 * 1024);
        Assert.Equal(ExpectedCsv(1000), Decompress(await _client.GetByteArrayAsync("/export")));
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task Rows_beyond_the_maximum_or_below_zero_are_a_400(string path)
    {
        using HttpResponseMessage over = await _client.GetAsync($"{path}?rows=100001");
        using HttpResponseMessage negative = await _client.GetAsync($"{path}?rows=-1");
        using HttpResponseMessage notANumber = await _client.GetAsync($"{path}?rows=many");
        using HttpResponseMessage atTheMaximum = await _client.GetAsync($"{path}?rows=100000");

        Assert.Equal(HttpStatusCode.BadRequest, over.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, negative.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, notANumber.StatusCode);
        Assert.Equal(HttpStatusCode.OK, atTheMaximum.StatusCode);
        Assert.EndsWith("100000,SKU-00000,2,0.00,2026-03-11T10:40:00Z\n", Decompress(await atTheMaximum.Content.ReadAsByteArrayAsync()), StringComparison.Ordinal);
    }

    private static string Decompress(byte[] gzip)
    {
        using var input = new GZipStream(new MemoryStream(gzip), CompressionMode.Decompress);
        using var reader = new StreamReader(input, Encoding.UTF8);
        return reader.ReadToEnd();
    }

    // Written here from the sample's documented row formula, independently of its code.
    private static string ExpectedCsv(int rows)
    {
        var csv = new StringBuilder("id,sku,quantity,unit_price,created\n");
        var epoch = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        for (int i = 1; i <= rows; i++)
        {
            csv.Append(CultureInfo.InvariantCulture, $"{i},SKU-{i * 7919 % 100_000:D5},{i % 9 + 1},{i * 37 % 100_000 / 100m:F2},{epoch.AddMinutes(i):yyyy-MM-ddTHH:mm:ssZ}\n");
        }

        return csv.ToString();
    }
}
