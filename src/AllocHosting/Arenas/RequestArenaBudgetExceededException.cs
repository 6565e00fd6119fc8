using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// Thrown by a rent when the process-wide request arena budget is spent (after the wait that
/// <see cref="ArenaBudgetPolicy.Wait"/> allows). The request-arena middleware turns it into
/// 503 Service Unavailable with a Retry-After header and counts it in <c>allochosting.rejected</c>;
/// as a <see cref="BadHttpRequestException"/> with <see cref="BadHttpRequestException.StatusCode"/>
/// 503, exception pages that catch it first keep that status.
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
