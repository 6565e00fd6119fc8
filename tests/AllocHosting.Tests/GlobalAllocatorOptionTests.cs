using AllocHosting.Allocators;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AllocHosting.Tests;

/// <summary><see cref="SwitchableAllocatorOptions.GlobalAllocator"/>: which allocator serves the registered switchable allocator's global mode.</summary>
public class GlobalAllocatorOptionTests
{
    [Fact]
    public async Task The_process_allocator_is_the_default()
    {
        await using WebApplication app = Build(null);
        await app.StartAsync();

        Assert.Equal(GlobalAllocatorKind.Process, app.Services.GetRequiredService<IOptions<SwitchableAllocatorOptions>>().Value.GlobalAllocator);
        Assert.Same(NativeMemoryAllocator.Shared, app.Services.GetRequiredService<SwitchableAllocator>().Global);
    }

    [MimallocFact]
    public async Task Mimalloc_chosen_in_configuration_serves_the_global_mode()
    {
        await using WebApplication app = Build("Mimalloc");
        await app.StartAsync();

        SwitchableAllocator switchable = app.Services.GetRequiredService<SwitchableAllocator>();
        var global = Assert.IsType<ExternalNativeAllocator>(switchable.Global);
        Assert.Equal(NativeAllocatorLibrary.Mimalloc, global.Library);
        long before = global.Statistics.AllocationCount;
        AllocateThroughTheSwitchableAllocator(switchable, global);
        Assert.Equal(before + 1, global.Statistics.AllocationCount);
    }

    [Fact]
    public async Task NumaHeap_chosen_in_configuration_serves_the_global_mode()
    {
        await using WebApplication app = Build("NumaHeap");
        await app.StartAsync();

        SwitchableAllocator switchable = app.Services.GetRequiredService<SwitchableAllocator>();
        Assert.Same(NumaHeapAllocator.Shared, switchable.Global);
        AllocateAndFreeOnTheNumaHeap(switchable, NumaHeapAllocator.Shared);
    }

    private static unsafe void AllocateAndFreeOnTheNumaHeap(SwitchableAllocator switchable, NumaHeapAllocator global)
    {
        byte* block = switchable.Allocate(1000, 16);
        Assert.NotNull(global.GetHeapOf(block));         // a block of one of the NUMA heaps
        Assert.True(switchable.Owns(block));
        switchable.Deallocate(block, 1000, 16);          // routed back to the global allocator
        Assert.Throws<ArgumentException>(() => global.Deallocate(block, 1000, 16));   // so it is free there now
    }

    private static unsafe void AllocateThroughTheSwitchableAllocator(SwitchableAllocator switchable, ExternalNativeAllocator global)
    {
        byte* block = switchable.Allocate(1000, 16);
        Assert.True(global.GetBlockUsableSize(block) >= 1000);
        switchable.Deallocate(block, 1000, 16);
    }

    [Fact]
    public async Task A_library_that_cannot_be_loaded_stops_start_up_naming_it()
    {
        // rpmalloc has no Debian package, so it is usually missing; where it is installed, start-up must succeed instead.
        await using WebApplication app = Build("Rpmalloc");
        if (ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Rpmalloc, out _))
        {
            await app.StartAsync();
            return;
        }

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => app.StartAsync());
        Assert.Contains("SwitchableAllocators:GlobalAllocator is Rpmalloc, but its library cannot be loaded", error.Message, StringComparison.Ordinal);
        Assert.Contains("librpmalloc.so", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_undefined_value_stops_start_up_listing_the_allowed_ones()
    {
        await using WebApplication app = Build(null, options => options.GlobalAllocator = (GlobalAllocatorKind)9);

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => app.StartAsync());
        Assert.Contains("SwitchableAllocators:GlobalAllocator is 9; allowed: Process, Mimalloc, Jemalloc, Rpmalloc, NumaHeap.", error.Message, StringComparison.Ordinal);
    }

    private static WebApplication Build(string? configured, Action<SwitchableAllocatorOptions>? configure = null)
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        if (configured is not null)
        {
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?> { ["SwitchableAllocators:GlobalAllocator"] = configured });
        }

        builder.Services.AddSwitchableAllocators(configure);
        return builder.Build();
    }
}
