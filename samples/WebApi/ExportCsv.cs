using System.Globalization;
using System.IO.Compression;
using System.Text;

namespace AllocHosting.Samples.WebApi;

/// <summary>
/// What the four /export variants share: the rows limit, the deterministic CSV written through a
/// <see cref="StreamWriter"/> over a <see cref="GZipStream"/> over the variant's stream, and the response headers.
/// </summary>
internal static class ExportCsv
{
    /// <summary>Rows when the query names none.</summary>
    public const int DefaultRows = 1000;

    /// <summary>The most rows one export may ask for (400 beyond, or below 0).</summary>
    public const int MaxRows = 100_000;

    /// <summary>The response's media type: a gzip file (identical for every variant; no <c>Content-Encoding</c>).</summary>
    public const string ContentType = "application/gzip";

    /// <summary>The response's <c>Content-Disposition</c>.</summary>
    public const string ContentDisposition = "attachment; filename=export.csv.gz";

    /// <summary>The CSV's first line.</summary>
    public const string Header = "id,sku,quantity,unit_price,created\n";

    private const int WriterBufferSize = 16 * 1024;
    private static readonly UTF8Encoding s_utf8 = new(encoderShouldEmitUTF8Identifier: false);
    private static readonly DateTime s_epoch = new(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);

    /// <summary>The rows asked for, or a 400 answer.</summary>
    public static bool TryGetRows(int? rows, out int count, out IResult? error)
    {
        count = rows ?? DefaultRows;
        if (count is < 0 or > MaxRows)
        {
            error = Results.Problem($"rows must be between 0 and {MaxRows}.", statusCode: StatusCodes.Status400BadRequest);
            return false;
        }

        error = null;
        return true;
    }

    /// <summary>Writes the gzip-compressed CSV of <paramref name="rows"/> rows to <paramref name="destination"/> (left open).</summary>
    public static void Write(Stream destination, int rows)
    {
        using var gzip = new GZipStream(destination, CompressionLevel.Fastest, leaveOpen: true);
        using var writer = new StreamWriter(gzip, s_utf8, WriterBufferSize, leaveOpen: true);
        writer.Write(Header);
        Span<char> line = stackalloc char[128];
        for (int i = 1; i <= rows; i++)
        {
            line.TryWrite(CultureInfo.InvariantCulture, $"{i},SKU-{i * 7919 % 100_000:D5},{i % 9 + 1},{i * 37 % 100_000 / 100m:F2},{s_epoch.AddMinutes(i):yyyy-MM-ddTHH:mm:ssZ}\n", out int written);
            writer.Write(line[..written]);
        }
    }

    /// <summary>Sets the headers every variant sends besides the type and length.</summary>
    public static void SetDisposition(HttpResponse response) => response.Headers.ContentDisposition = ContentDisposition;
}
