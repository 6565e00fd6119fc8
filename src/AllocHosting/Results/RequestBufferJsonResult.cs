using System.Reflection;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting;

/// <summary>
/// A JSON response serialised into request memory and sent with its exact <c>Content-Length</c>
/// (so it is not chunked, and its length is known before it is sent): made by
/// <see cref="RequestBufferResults.Json{T}(T, JsonTypeInfo{T}, string?, int?)"/>.
/// </summary>
/// <remarks>
/// The value is written by a <see cref="Utf8JsonWriter"/> into a <see cref="RequestBufferWriter"/>
/// of the request's <see cref="IRequestBuffers"/>, then sent from there: the serialised bytes never
/// touch the GC heap. It needs the request-arena middleware (<c>AddSwitchableAllocators()</c>).
/// As an endpoint's return type it tells OpenAPI that the endpoint produces <typeparamref name="T"/>
/// as <c>application/json</c>.
/// </remarks>
/// <typeparam name="T">The type of the value.</typeparam>
public sealed class RequestBufferJsonResult<T> : IResult, IStatusCodeHttpResult, IContentTypeHttpResult, IValueHttpResult, IValueHttpResult<T>, IEndpointMetadataProvider
{
    private const string DefaultContentType = "application/json; charset=utf-8";

    private readonly JsonTypeInfo<T> _typeInfo;

    internal RequestBufferJsonResult(T value, JsonTypeInfo<T> typeInfo, string? contentType, int? statusCode)
    {
        Value = value;
        _typeInfo = typeInfo;
        ContentType = contentType ?? DefaultContentType;
        StatusCode = statusCode;
    }

    /// <summary>The value to serialise.</summary>
    public T Value { get; }

    object? IValueHttpResult.Value => Value;

    /// <summary>The response's content type (<c>application/json; charset=utf-8</c> unless given).</summary>
    public string ContentType { get; }

    /// <summary>The response's status code (200 unless given).</summary>
    public int? StatusCode { get; }

    /// <summary>Serialises the value into request memory, then writes the status, the headers and the body.</summary>
    /// <param name="httpContext">The request's context.</param>
    /// <exception cref="InvalidOperationException">No request arena is active (the middleware is missing).</exception>
    public Task ExecuteAsync(HttpContext httpContext)
    {
        ArgumentNullException.ThrowIfNull(httpContext);
        RequestBufferWriter buffer = httpContext.RequestServices.GetRequiredService<IRequestBuffers>().CreateWriter();
        using (var json = new Utf8JsonWriter(buffer))
        {
            JsonSerializer.Serialize(json, Value, _typeInfo);
        }

        return RequestBufferBytesResult.Send(httpContext.Response, buffer.WrittenSequence, ContentType, StatusCode ?? StatusCodes.Status200OK, httpContext.RequestAborted);
    }

    // Tells the endpoint's metadata (and so OpenAPI) that it produces T as JSON.
    static void IEndpointMetadataProvider.PopulateMetadata(MethodInfo method, EndpointBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Metadata.Add(new ProducesResponseTypeMetadata(StatusCodes.Status200OK, typeof(T), ["application/json"]));
    }
}
