using Microsoft.AspNetCore.SignalR;
using Microsoft.Extensions.DependencyInjection;

namespace AllocHosting;

/// <summary>
/// The hub filter of <c>AddRequestArenas()</c>: gives each hub invocation (and each
/// <c>OnConnectedAsync</c>/<c>OnDisconnectedAsync</c>) its own arena scope, and binds the
/// invocation's <see cref="IRequestBuffers"/> to it, so that rents in a hub method are released
/// when the method returns instead of growing the connection's request arena for the whole
/// connection. With <see cref="SwitchableAllocatorOptions.InstallContextAllocator"/> on, the scope's
/// arena is also the context allocator of the invocation's flow (as the request's is for a request),
/// through the same <see cref="IRequestArenaActivator"/>, and is restored when the method returns.
/// </summary>
/// <remarks>
/// SignalR creates a DI scope per invocation and resolves the hub (and its constructor's
/// <see cref="IRequestBuffers"/>) in it before the filters run; the <see cref="IRequestBuffers"/>
/// resolves its arena on first use, so binding it here, before the method runs, serves both the
/// constructor-injected instance and a hub method parameter. A constructor must not rent (it runs
/// before the scope exists). The method's return value is serialised after the filter returned:
/// return managed values, never arena memory. A streaming method's arena ends when it returns its
/// stream: create a scope inside the stream's iterator instead. Stateless: one instance serves all
/// connections at once.
/// </remarks>
internal sealed class RequestArenaHubFilter(IArenaScopeFactory scopes, IRequestArenaActivator activator) : IHubFilter
{
    public async ValueTask<object?> InvokeMethodAsync(HubInvocationContext invocationContext, Func<HubInvocationContext, ValueTask<object?>> next)
    {
        using ArenaScope scope = Begin(invocationContext.ServiceProvider, invocationContext.HubMethodName, invocationContext.Hub);
        using (activator.Activate(scope.Arena))
        {
            return await next(invocationContext);
        }
    }

    public async Task OnConnectedAsync(HubLifetimeContext context, Func<HubLifetimeContext, Task> next)
    {
        using ArenaScope scope = Begin(context.ServiceProvider, nameof(Hub.OnConnectedAsync), context.Hub);
        using (activator.Activate(scope.Arena))
        {
            await next(context);
        }
    }

    public async Task OnDisconnectedAsync(HubLifetimeContext context, Exception? exception, Func<HubLifetimeContext, Exception?, Task> next)
    {
        using ArenaScope scope = Begin(context.ServiceProvider, nameof(Hub.OnDisconnectedAsync), context.Hub);
        using (activator.Activate(scope.Arena))
        {
            await next(context, exception);
        }
    }

    // The scope is named after the hub method and the hub's type (reported if it were never released).
    private ArenaScope Begin(IServiceProvider services, string method, Hub hub)
    {
        ArenaScope scope = scopes.CreateScope(method, hub.GetType().FullName ?? nameof(Hub), 0);
        if (services.GetService<IRequestBuffers>() is RequestBuffers buffers)
        {
            buffers.BindToScope(scope);
        }

        return scope;
    }
}
