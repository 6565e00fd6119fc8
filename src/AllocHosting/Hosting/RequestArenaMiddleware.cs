using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting;

/// <summary>
/// Gives every request an arena: takes a (memory-less) arena object, exposes it as
/// <see cref="IRequestArenaFeature"/>, installs it as the flow's context allocator, runs the rest
/// of the pipeline, and in all cases (normal end, exception, client abort) releases everything
/// the request rented, clears it by policy, records its usage and returns the arena. A rent
/// refused because the budget is spent ends the request with 503 and Retry-After (problem details
/// when the app registered an <see cref="IProblemDetailsService"/>), or, when the response has
/// already started, aborts the request (counted and logged once as a rejection, like the 503); a request body
/// that <see cref="IRequestBuffers.ReadJsonAsync{T}(System.Text.Json.Serialization.Metadata.JsonTypeInfo{T}, CancellationToken)"/>
/// could not read as JSON, and that the handler did not catch, with 400 (problem details when the app
/// registered an <see cref="IProblemDetailsService"/>).
/// </summary>
internal sealed class RequestArenaMiddleware(RequestDelegate next, RequestArenaPool pool, IRequestArenaActivator activator)
{
    public async Task InvokeAsync(HttpContext context)
    {
        RequestArena arena = pool.RentArena(context);
        context.Features.Set<IRequestArenaFeature>(arena);
        try
        {
            // The switchable allocator's merge point (see IRequestArenaActivator).
            using (activator.Activate(arena))
            {
                await next(context);
            }
        }
        catch (RequestArenaBudgetExceededException error) when (!context.Response.HasStarted)
        {
            await RejectAsync(context, error);
        }
        catch (RequestArenaBudgetExceededException)
        {
            // Too late for a 503: the client gets a broken response rather than a truncated one that
            // looks complete. The arena was marked rejected by the refusal, so the pool counts and
            // logs it when it takes the arena back; nothing else logs it (it goes no further).
            context.Abort();
        }
        catch (RequestBodyJsonException error) when (!context.Response.HasStarted)
        {
            await BadJsonAsync(context, error);
        }
        finally
        {
            context.Features.Set<IRequestArenaFeature>(null);
            pool.ReturnArena(arena, context);
        }
    }

    // 503 as the app answers problems (as BadJsonAsync does). Retry-After is added by the OnStarting
    // callback RequestArena.MarkRejected registered, after whatever the problem writer sets.
    private static async Task RejectAsync(HttpContext context, RequestArenaBudgetExceededException error)
    {
        context.Response.Clear();
        context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        if (context.RequestServices?.GetService<IProblemDetailsService>() is { } problems)
        {
            var problem = new ProblemDetailsContext
            {
                HttpContext = context,
                Exception = error,
                ProblemDetails = new ProblemDetails
                {
                    Status = StatusCodes.Status503ServiceUnavailable,
                    Title = "The server's request memory budget is spent.",
                    Detail = "The request was refused for lack of request memory; retry after the time the Retry-After header gives.",
                },
            };
            if (await problems.TryWriteAsync(problem))
            {
                return;
            }
        }

        context.Response.ContentType = "text/plain; charset=utf-8";
        await context.Response.WriteAsync("The server's request memory budget is spent; retry later.", context.RequestAborted);
    }

    // 400 as the app answers problems: through its IProblemDetailsService (AddProblemDetails()) when it has one
    // and the client accepts JSON, else plain text. The message names no type and quotes nothing of the body.
    private static async Task BadJsonAsync(HttpContext context, RequestBodyJsonException error)
    {
        context.Response.Clear();
        context.Response.StatusCode = StatusCodes.Status400BadRequest;
        if (context.RequestServices?.GetService<IProblemDetailsService>() is { } problems)
        {
            var problem = new ProblemDetailsContext
            {
                HttpContext = context,
                Exception = error,
                ProblemDetails = new ProblemDetails
                {
                    Status = StatusCodes.Status400BadRequest,
                    Title = "The request body is not valid JSON.",
                    Detail = error.Message,
                },
            };
            if (await problems.TryWriteAsync(problem))
            {
                return;
            }
        }

        context.Response.ContentType = "text/plain; charset=utf-8";
        await context.Response.WriteAsync(error.Message, context.RequestAborted);
    }
}
