using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting.Tests;

public sealed record JsonOrder(string Name, int Count, int[] Values);

[JsonSerializable(typeof(JsonOrder))]
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
internal sealed partial class JsonOrderContext : JsonSerializerContext;

/// <summary>IRequestBuffers.ReadJsonAsync: the body read into request memory and deserialised from there; bad JSON is a 400, not a 500.</summary>
public class RequestJsonReaderTests
{
    private static Task<TestApp> StartAsync(bool problemDetails = false, string environment = "Production") => TestApp.StartAsync(
        a =>
        {
            a.MapPost("/typed", async (IRequestBuffers buffers) =>
            {
                JsonOrder? order = await buffers.ReadJsonAsync(JsonOrderContext.Default.JsonOrder);
                return order is null ? "null" : $"{order.Name} {order.Count} {string.Join(',', order.Values)}";
            });
            a.MapPost("/reflection", async (IRequestBuffers buffers) =>
            {
                JsonOrder? order = await buffers.ReadJsonAsync<JsonOrder>();
                return $"{order!.Name} {order.Count} {order.Values.Sum()}";
            });
        },
        build: builder =>
        {
            if (problemDetails)
            {
                builder.Services.AddProblemDetails();
            }
        },
        environment: environment);

    private static StringContent Json(string json, string mediaType = "application/json") => new(json, Encoding.UTF8, mediaType);

    [Fact]
    public async Task A_valid_body_is_deserialised_with_a_type_info_and_by_reflection()
    {
        await using var app = await StartAsync();

        using HttpResponseMessage typed = await app.Client.PostAsync("/typed", Json("""{"name":"a","count":2,"values":[1,2]}"""));
        using HttpResponseMessage reflection = await app.Client.PostAsync("/reflection", Json(""" {"Name":"b","count":3,"values":[4,5,6]} """));

        Assert.Equal("a 2 1,2", await typed.Content.ReadAsStringAsync());
        Assert.Equal("b 3 15", await reflection.Content.ReadAsStringAsync());   // JsonSerializerOptions.Web: case-insensitive
    }

    [Fact]
    public async Task A_large_chunked_body_of_many_segments_is_deserialised()
    {
        int[] values = Enumerable.Range(0, 50_000).ToArray();
        string json = JsonSerializer.Serialize(new JsonOrder(new string('n', 70_000), values.Length, values), JsonOrderContext.Default.JsonOrder);
        await using var app = await StartAsync();
        using var content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(json)));
        content.Headers.ContentLength = null;

        using HttpResponseMessage response = await app.Client.PostAsync("/typed", content);

        string answer = await response.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith(new string('n', 70_000) + " 50000 0,1,2,", answer, StringComparison.Ordinal);
        Assert.EndsWith(",49999", answer, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Any_content_type_is_accepted_and_null_gives_default()
    {
        await using var app = await StartAsync();

        using HttpResponseMessage plain = await app.Client.PostAsync("/typed", Json("""{"name":"t","count":1,"values":[]}""", "text/plain"));
        using HttpResponseMessage none = await app.Client.PostAsync("/typed", new ByteArrayContent("null"u8.ToArray()));

        Assert.Equal("t 1 ", await plain.Content.ReadAsStringAsync());
        Assert.Equal("null", await none.Content.ReadAsStringAsync());
    }

    [Theory]
    [InlineData("""{"name":"a","count":""")]            // truncated
    [InlineData("""{"name":"a",,}""")]                  // malformed
    [InlineData("")]                                     // empty
    [InlineData("   ")]                                  // whitespace only
    [InlineData("""{"name":"a"} {"name":"b"}""")]       // two values
    [InlineData("""{"name":"a"} x""")]                  // trailing garbage
    [InlineData("""{"name":"a","count":"two"}""")]      // a value the type cannot take
    [InlineData("""[1,2]""")]                            // the wrong kind of value
    public async Task A_body_that_is_not_one_JSON_value_of_the_type_is_a_plain_400_without_problem_details(string body)
    {
        await using var app = await StartAsync();

        using HttpResponseMessage response = await app.Client.PostAsync("/typed", Json(body));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("The request body is not valid JSON for the expected type.", await response.Content.ReadAsStringAsync());
        await TestApp.EventuallyAsync(() => app.Pool.ChunksInUse == 0, "the refused request released its chunks");
    }

    [Fact]
    public async Task With_AddProblemDetails_bad_JSON_is_a_400_problem_details_response()
    {
        await using var app = await StartAsync(problemDetails: true);

        using HttpResponseMessage response = await app.Client.PostAsync("/typed", Json("""{"name":"""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using JsonDocument problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(400, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Equal("The request body is not valid JSON.", problem.RootElement.GetProperty("title").GetString());
        Assert.Equal("The request body is not valid JSON for the expected type.", problem.RootElement.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task In_Development_the_developer_exception_page_answers_first_and_keeps_the_400()
    {
        // WebApplication puts the developer exception page after the request-arena middleware, so it sees the
        // exception first; as a BadHttpRequestException of status 400 it answers 400 (with the exception's details).
        await using var app = await StartAsync(problemDetails: true, environment: "Development");

        using HttpResponseMessage response = await app.Client.PostAsync("/typed", Json("""{"name":"""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using JsonDocument problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(400, problem.RootElement.GetProperty("status").GetInt32());
    }

    [Fact]
    public async Task Behind_UseExceptionHandler_the_status_is_what_the_handler_chooses()
    {
        // UseExceptionHandler sits after the request-arena middleware and sees the exception first: ASP.NET Core's
        // handler answers 500 for any exception unless told otherwise, so an app with it maps BadHttpRequestException.
        await using var app = await TestApp.StartAsync(
            a =>
            {
                a.UseExceptionHandler(new ExceptionHandlerOptions
                {
                    StatusCodeSelector = error => error is BadHttpRequestException bad ? bad.StatusCode : StatusCodes.Status500InternalServerError,
                });
                a.MapPost("/", async (IRequestBuffers buffers) => (await buffers.ReadJsonAsync(JsonOrderContext.Default.JsonOrder))!.Name);
            },
            build: builder => builder.Services.AddProblemDetails());

        using HttpResponseMessage response = await app.Client.PostAsync("/", Json("{"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task A_client_that_accepts_only_HTML_gets_the_plain_400_even_with_problem_details()
    {
        await using var app = await StartAsync(problemDetails: true);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/typed") { Content = Json("{") };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/html"));

        using HttpResponseMessage response = await app.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task The_app_can_catch_the_exception_and_answer_its_own_way()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            try
            {
                await buffers.ReadJsonAsync(JsonOrderContext.Default.JsonOrder);
                return Results.Ok();
            }
            catch (RequestBodyJsonException error)
            {
                var json = Assert.IsAssignableFrom<JsonException>(error.InnerException);
                return Results.Text($"{error.StatusCode} line {json.LineNumber}", statusCode: StatusCodes.Status422UnprocessableEntity);
            }
        }));

        using HttpResponseMessage response = await app.Client.PostAsync("/", Json("{\n  \"name\": ]"));

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        Assert.Equal("400 line 1", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_body_read_before_is_deserialised_without_reading_again()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            ReadOnlyMemory<byte> raw = await buffers.ReadBodyAsync();
            long used = buffers.Used;
            JsonOrder? order = await buffers.ReadJsonAsync(JsonOrderContext.Default.JsonOrder);
            return $"{raw.Length} {order!.Name} {buffers.Used - used}";
        }));

        const string Body = """{"name":"x","count":0,"values":[]}""";
        using HttpResponseMessage response = await app.Client.PostAsync("/", Json(Body));

        Assert.Equal($"{Body.Length} x 0", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task A_body_beyond_the_request_limit_is_still_a_413()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (HttpContext context, IRequestBuffers buffers) =>
        {
            context.Features.Set<IHttpMaxRequestBodySizeFeature>(new TestBodySizeLimit { MaxRequestBodySize = 1_000 });
            try
            {
                await buffers.ReadJsonAsync(JsonOrderContext.Default.JsonOrder);
                return "read";
            }
            catch (BadHttpRequestException error)
            {
                return $"{error.GetType().Name} {error.StatusCode}";
            }
        }));

        string big = $$"""{"name":"{{new string('a', 5_000)}}","count":0,"values":[]}""";
        using HttpResponseMessage response = await app.Client.PostAsync("/", Json(big));

        Assert.Equal("BadHttpRequestException 413", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Bad_arguments_and_a_request_without_an_arena_are_refused()
    {
        await using var app = await TestApp.StartAsync(a => a.MapPost("/", async (IRequestBuffers buffers) =>
        {
            await Assert.ThrowsAsync<ArgumentNullException>(async () => await buffers.ReadJsonAsync((System.Text.Json.Serialization.Metadata.JsonTypeInfo<JsonOrder>)null!));
            return "refused";
        }));
        using HttpResponseMessage response = await app.Client.PostAsync("/", Json("{}"));
        Assert.Equal("refused", await response.Content.ReadAsStringAsync());

        using IServiceScope scope = app.Services.CreateScope();
        IRequestBuffers outside = scope.ServiceProvider.GetRequiredService<IRequestBuffers>();
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await outside.ReadJsonAsync(JsonOrderContext.Default.JsonOrder));
    }
}
