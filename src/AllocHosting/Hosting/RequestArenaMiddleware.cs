using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// Gives every request an arena: takes a (memory-less) arena object, exposes it as
/// <see cref="IRequestArenaFeature"/>, installs it as the flow's context allocator, runs the rest
/// of the pipeline, and in all cases (normal end, exception, client abort) releases everything
/// the request rented, clears it by policy, records its usage and returns the arena. A rent
/// refused because the budget is spent ends the request with 503 and Retry-After.
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
        catch (RequestArenaBudgetExceededException) when (!context.Response.HasStarted)
        {
            await RejectAsync(context);
        }
        finally
        {
            context.Features.Set<IRequestArenaFeature>(null);
            pool.ReturnArena(arena, context);
        }
    }

    // Retry-After is added by the OnStarting callback RequestArena.MarkRejected registered.
    private static Task RejectAsync(HttpContext context)
    {
        context.Response.Clear();
        context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        return context.Response.WriteAsync("The server's request memory budget is spent; retry later.", context.RequestAborted);
    }
}
