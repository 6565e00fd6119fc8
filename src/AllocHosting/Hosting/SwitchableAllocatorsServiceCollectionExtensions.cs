using AllocHosting;
using AllocHosting.Allocators;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>The one line: <c>builder.Services.AddSwitchableAllocators()</c>.</summary>
public static class SwitchableAllocatorsServiceCollectionExtensions
{
    /// <summary>
    /// Registers the request arenas and everything around them: a <see cref="SwitchableAllocator"/>
    /// (global: the process allocator, or the native library or NUMA heap allocator chosen by <see cref="SwitchableAllocatorOptions.GlobalAllocator"/>; per thread: NUMA-local <see cref="ThreadLocalAllocator.Shared"/>;
    /// context: each request's arena, installed by the middleware), the arena pool, the scoped
    /// <see cref="IRequestBuffers"/>, the <see cref="IArenaScopeFactory"/> (arena scopes for work that
    /// is not a request, from the same pool and budget), the <c>AllocHosting</c> meter, the <c>allochosting</c> health
    /// check, and the request-arena middleware at the start of the pipeline (through an
    /// <see cref="IStartupFilter"/>; <c>app.UseRequestArena()</c> places it elsewhere instead).
    /// Options bind from the configuration section <c>SwitchableAllocators</c> (a key the options do
    /// not have stops start-up with an <see cref="InvalidOperationException"/> naming it), then
    /// <paramref name="configure"/> runs, and they are validated when the host starts.
    /// Calling it again only adds <paramref name="configure"/>.
    /// </summary>
    /// <param name="services">The application's services.</param>
    /// <param name="configure">Changes the options after configuration binding; optional.</param>
    /// <returns><paramref name="services"/>.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="services"/> is null.</exception>
    public static IServiceCollection AddSwitchableAllocators(this IServiceCollection services, Action<SwitchableAllocatorOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions<SwitchableAllocatorOptions>()
            // A key the options do not have (a misspelt "MemoryBudjet") stops start-up, naming the key.
            .BindConfiguration(SwitchableAllocatorOptions.SectionName, binder => binder.ErrorOnUnknownConfiguration = true)
            .ValidateOnStart();
        if (configure is not null)
        {
            services.Configure(configure);
        }

        if (services.Any(descriptor => descriptor.ServiceType == typeof(RequestArenaPool)))
        {
            return services;
        }

        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<SwitchableAllocatorOptions>, SwitchableAllocatorOptionsValidator>());
        services.AddMetrics();
        services.AddHttpContextAccessor();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<AllocHostingMetrics>();
        services.TryAddSingleton(provider =>
        {
            SwitchableAllocatorOptions options = provider.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value;
            ILogger logger = provider.GetRequiredService<ILogger<RequestArenaPool>>();
            return ArenaChunkSource.ForThisMachine(options, logger);
        });
        services.TryAddSingleton<RequestArenaPool>();
        services.TryAddSingleton<RequestArenaPlacement>();
        // With the process allocator as global, the registered instance is SwitchableAllocator.Default, so that code that
        // takes no allocator (new NativeList<T>()) allocates from the request's arena when InstallContextAllocator is on;
        // with another global allocator the activator installs the arena in both instances.
        services.TryAddSingleton(provider =>
        {
            GlobalAllocatorKind global = provider.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value.GlobalAllocator;
            return global == GlobalAllocatorKind.Process
                ? SwitchableAllocator.Default
                : new SwitchableAllocator(GlobalAllocators.Create(global), ThreadLocalAllocator.Shared);
        });
        services.TryAddSingleton<IRequestArenaActivator>(provider =>
            provider.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value.InstallContextAllocator
                ? new SwitchableRequestArenaActivator(provider.GetRequiredService<SwitchableAllocator>())
                : new NoRequestArenaActivator());
        services.TryAddSingleton<AllocatorDashboardSampler>();   // started only by MapAllocatorDashboard
        services.TryAddScoped<IRequestBuffers, RequestBuffers>();
        services.TryAddSingleton<ArenaScopeFactory>();
        services.TryAddSingleton<IArenaScopeFactory>(provider => provider.GetRequiredService<ArenaScopeFactory>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IStartupFilter, RequestArenaStartupFilter>());
        services.AddHealthChecks().AddCheck<RequestArenaHealthCheck>(RequestArenaHealthCheck.Name, tags: ["allochosting", "memory"]);
        return services;
    }
}
