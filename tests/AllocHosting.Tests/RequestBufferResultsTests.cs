using System.Buffers;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

public sealed record ResultsSummary(string Name, int Count, int[] Values);

[JsonSerializable(typeof(ResultsSummary))]
internal sealed partial class ResultsJsonContext : JsonSerializerContext;

/// <summary>RequestBufferResults: bodies from request memory with an exact Content-Length, on the test server.</summary>
public class RequestBufferResultsTests
{
    private static async Task<(HttpResponseMessage Response, byte[] Body)> GetAsync(TestApp app, string path)
    {
        HttpResponseMessage response = await app.Client.GetAsync(path);
        return (response, await response.Content.ReadAsByteArrayAsync());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(64 * 1024)]
    [InlineData(320 * 1024)]
    public async Task Bytes_of_rented_memory_are_sent_with_their_exact_length(int length)
    {
        byte[] payload = TestBytes.Pattern(length, length);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            Memory<byte> body = buffers.Rent(length);
            payload.CopyTo(body);
            return RequestBufferResults.Bytes(body, "application/x-test");
        }));

        (HttpResponseMessage response, byte[] body) = await GetAsync(app, "/");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(length, response.Content.Headers.ContentLength);
        Assert.Equal("application/x-test", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(payload, body);
    }

    [Fact]
    public async Task Bytes_of_a_writer_of_several_segments_are_sent_in_order_without_a_join()
    {
        byte[] payload = TestBytes.Pattern(200_000, 7);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            RequestBufferWriter writer = buffers.CreateWriter();
            for (int offset = 0; offset < payload.Length; offset += 3_000)
            {
                int length = Math.Min(3_000, payload.Length - offset);
                payload.AsSpan(offset, length).CopyTo(writer.GetSpan(length));
                writer.Advance(length);
            }

            Assert.False(writer.WrittenSequence.IsSingleSegment);
            return RequestBufferResults.Bytes(writer, statusCode: StatusCodes.Status201Created);
        }));

        (HttpResponseMessage response, byte[] body) = await GetAsync(app, "/");

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        Assert.Equal(payload.Length, response.Content.Headers.ContentLength);
        Assert.Equal("application/octet-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(payload, body);
    }

    [Fact]
    public async Task Bytes_of_a_sequence_are_sent_segment_by_segment()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", (IRequestBuffers buffers) =>
        {
            RequestBufferWriter writer = buffers.CreateWriter();
            writer.Write("hello, "u8);
            writer.Write("sequence"u8);
            ReadOnlySequence<byte> body = writer.WrittenSequence;
            return RequestBufferResults.Bytes(body, "text/plain");
        }));

        (HttpResponseMessage response, byte[] body) = await GetAsync(app, "/");

        Assert.Equal(15, response.Content.Headers.ContentLength);
        Assert.Equal("hello, sequence", Encoding.UTF8.GetString(body));
    }

    [Fact]
    public async Task Json_with_a_type_info_is_serialised_into_request_memory_and_sent_with_its_length()
    {
        var value = new ResultsSummary("a", 3, [1, 2, 3]);
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", () =>
        {
            var result = RequestBufferResults.Json(value, ResultsJsonContext.Default.ResultsSummary);
            Assert.Equal(value, result.Value);
            return result;
        }));

        (HttpResponseMessage response, byte[] body) = await GetAsync(app, "/");

        byte[] expected = JsonSerializer.SerializeToUtf8Bytes(value, ResultsJsonContext.Default.ResultsSummary);
        Assert.Equal(expected, body);
        Assert.Equal(expected.Length, response.Content.Headers.ContentLength);
        Assert.Null(response.Headers.TransferEncodingChunked);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("utf-8", response.Content.Headers.ContentType?.CharSet);
    }

    [Fact]
    public async Task Json_uses_request_memory_for_the_serialised_bytes()
    {
        long used = -1;
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            await RequestBufferResults.Json(new ResultsSummary(new string('x', 10_000), 1, []), ResultsJsonContext.Default.ResultsSummary).ExecuteAsync(context);
            used = buffers.Used;
        }));

        (_, byte[] body) = await GetAsync(app, "/");

        Assert.True(body.Length > 10_000);
        Assert.True(used >= body.Length, $"{used} bytes of request memory for a {body.Length}-byte body");
    }

    [Fact]
    public async Task Json_with_options_serialises_by_reflection_and_takes_a_status_and_content_type()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/", () =>
            RequestBufferResults.Json(new { Name = "b", Count = 2 }, new JsonSerializerOptions(JsonSerializerDefaults.Web), "application/problem+json", StatusCodes.Status409Conflict)));

        (HttpResponseMessage response, byte[] body) = await GetAsync(app, "/");

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("""{"name":"b","count":2}""", Encoding.UTF8.GetString(body));
        Assert.Equal(body.Length, response.Content.Headers.ContentLength);
    }

    [Fact]
    public async Task A_json_result_tells_the_endpoint_metadata_what_it_produces()
    {
        await using var app = await TestApp.StartAsync(a => a.MapGet("/summary", () =>
            RequestBufferResults.Json(new ResultsSummary("a", 0, []), ResultsJsonContext.Default.ResultsSummary)));

        Endpoint endpoint = app.Services.GetRequiredService<EndpointDataSource>().Endpoints.Single(e => (e as RouteEndpoint)?.RoutePattern.RawText == "/summary");
        IProducesResponseTypeMetadata produces = Assert.Single(endpoint.Metadata.GetOrderedMetadata<IProducesResponseTypeMetadata>(), m => m.Type == typeof(ResultsSummary));

        Assert.Equal(StatusCodes.Status200OK, produces.StatusCode);
        Assert.Contains("application/json", produces.ContentTypes);
    }

    [Fact]
    public async Task Json_without_the_request_arena_middleware_throws_a_clear_error()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await using var app = await TestApp.StartAsync(_ => { });
            using IServiceScope scope = app.Services.CreateScope();
            var context = new DefaultHttpContext { RequestServices = scope.ServiceProvider };
            await RequestBufferResults.Json(new ResultsSummary("a", 0, []), ResultsJsonContext.Default.ResultsSummary).ExecuteAsync(context);
        });

        Assert.Contains("no active request arena", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_arguments_are_refused()
    {
        Assert.Throws<ArgumentNullException>(() => RequestBufferResults.Bytes((RequestBufferWriter)null!));
        Assert.Throws<ArgumentNullException>(() => RequestBufferResults.Json(new ResultsSummary("a", 0, []), (System.Text.Json.Serialization.Metadata.JsonTypeInfo<ResultsSummary>)null!));
    }
}
