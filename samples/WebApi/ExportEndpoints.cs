namespace AllocHosting.Samples.WebApi;

/// <summary>
/// <c>GET /export?rows=N</c>: N deterministic CSV rows (0 ≤ N ≤ <see cref="ExportCsv.MaxRows"/>, else 400)
/// written through a <see cref="StreamWriter"/> over a gzip stream, answered as <c>application/gzip</c> with
/// an exact <c>Content-Length</c>. Four variants that answer the same bytes and differ only in the stream
/// the gzip lands in: request memory (<c>/export</c>), a <see cref="MemoryStream"/>
/// (<c>/export/memorystream</c>), a hand-written ArrayPool stream (<c>/export/arraypool</c>) and a
/// <c>RecyclableMemoryStream</c> (<c>/export/recyclable</c>).
/// </summary>
internal static class ExportEndpoints
{
    private const int FirstArraySize = 16 * 1024;

    /// <summary>Maps the four /export routes.</summary>
    public static IEndpointRouteBuilder MapExportEndpoints(this IEndpointRouteBuilder routes)
    {
        routes.MapGet("/export", RequestMemory);
        routes.MapGet("/export/memorystream", MemoryStreamExport);
        routes.MapGet("/export/arraypool", ArrayPoolAsync);
        routes.MapGet("/export/recyclable", RecyclableAsync);
        return routes;
    }

    // Compressed into a stream over request memory, answered from its segments (no join), released when the request ends.
    private static IResult RequestMemory(int? rows, HttpResponse response, IRequestBuffers buffers)
    {
        if (!ExportCsv.TryGetRows(rows, out int count, out IResult? error))
        {
            return error!;
        }

        RequestBufferStream stream = buffers.CreateStream();
        ExportCsv.Write(stream, count);
        ExportCsv.SetDisposition(response);
        return RequestBufferResults.Bytes(stream.GetReadOnlySequence(), ExportCsv.ContentType);
    }

    // What most code does today: a MemoryStream, then ToArray.
    private static IResult MemoryStreamExport(int? rows, HttpResponse response)
    {
        if (!ExportCsv.TryGetRows(rows, out int count, out IResult? error))
        {
            return error!;
        }

        using var stream = new MemoryStream();
        ExportCsv.Write(stream, count);
        ExportCsv.SetDisposition(response);
        return Results.Bytes(stream.ToArray(), ExportCsv.ContentType);
    }

    // A pooled array stream; the response is written before the array goes back to the pool.
    private static async Task<IResult> ArrayPoolAsync(int? rows, HttpResponse response, CancellationToken aborted)
    {
        if (!ExportCsv.TryGetRows(rows, out int count, out IResult? error))
        {
            return error!;
        }

        using var stream = new PooledBufferStream(FirstArraySize);
        ExportCsv.Write(stream, count);
        ExportCsv.SetDisposition(response);
        response.ContentType = ExportCsv.ContentType;
        response.ContentLength = stream.Length;
        await response.Body.WriteAsync(stream.WrittenMemory, aborted);
        return Results.Empty;
    }

    // Microsoft.IO.RecyclableMemoryStream from the one shared manager, answered block by block.
    private static async Task<IResult> RecyclableAsync(int? rows, HttpResponse response, CancellationToken aborted)
    {
        if (!ExportCsv.TryGetRows(rows, out int count, out IResult? error))
        {
            return error!;
        }

        using var stream = RecyclableStreams.Manager.GetStream("export");
        ExportCsv.Write(stream, count);
        ExportCsv.SetDisposition(response);
        response.ContentType = ExportCsv.ContentType;
        response.ContentLength = stream.Length;
        foreach (ReadOnlyMemory<byte> segment in stream.GetReadOnlySequence())
        {
            await response.Body.WriteAsync(segment, aborted);
        }

        return Results.Empty;
    }
}
