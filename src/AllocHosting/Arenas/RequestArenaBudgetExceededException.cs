using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// Thrown by a rent when the process-wide request arena budget is spent (after the wait that
/// <see cref="ArenaBudgetPolicy.Wait"/> allows). The request-arena middleware turns it into
/// 503 Service Unavailable with a Retry-After header and counts it in <c>allochosting.rejected</c>;
/// as a <see cref="BadHttpRequestException"/> with <see cref="BadHttpRequestException.StatusCode"/>
/// 503, the developer exception page keeps that status when it catches it first; an app's
/// <c>UseExceptionHandler</c> answers 500 unless its <c>StatusCodeSelector</c> maps
/// <see cref="BadHttpRequestException.StatusCode"/>.
/// </summary>
public sealed class RequestArenaBudgetExceededException : BadHttpRequestException
{
    /// <summary>Creates the exception with a message that names the spent budget.</summary>
    /// <param name="message">What was refused and why.</param>
    public RequestArenaBudgetExceededException(string message)
        : base(message, StatusCodes.Status503ServiceUnavailable)
    {
    }
}
