using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// Thrown by <see cref="IRequestBuffers.ReadJsonAsync{T}(System.Text.Json.Serialization.Metadata.JsonTypeInfo{T}, CancellationToken)"/>
/// when the request body is not JSON of the expected type (malformed, empty, truncated, a value of the wrong
/// kind, or more than one value). Its <see cref="Exception.InnerException"/> is the serialiser's
/// <see cref="System.Text.Json.JsonException"/> (with the line, position and path).
/// </summary>
/// <remarks>
/// A handler may catch it to answer its own way. Uncaught, the request-arena middleware turns it into
/// 400 Bad Request when the response has not started: a problem details response through the app's
/// <see cref="IProblemDetailsService"/> when one is registered (<c>AddProblemDetails()</c>) and the client
/// accepts JSON, plain text otherwise. The response names no type and quotes no part of the body. As a
/// <see cref="BadHttpRequestException"/> with <see cref="BadHttpRequestException.StatusCode"/> 400, Kestrel and
/// the developer exception page, when they catch it first, keep that status; <c>UseExceptionHandler</c> answers
/// 500 unless its <c>StatusCodeSelector</c> maps <see cref="BadHttpRequestException.StatusCode"/>.
/// </remarks>
public sealed class RequestBodyJsonException : BadHttpRequestException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What was wrong with the body, fit to show the client.</param>
    /// <param name="innerException">The serialiser's error.</param>
    public RequestBodyJsonException(string message, Exception innerException)
        : base(message, StatusCodes.Status400BadRequest, innerException)
    {
    }
}
