namespace AllocHosting.Allocators.Tests;

/// <summary>Loading external native allocators: a missing library's message, bad arguments, the unchecked instance.</summary>
public unsafe class ExternalNativeAllocatorLoadTests
{
    [Fact]
    public void A_library_that_cannot_be_loaded_is_named_with_what_to_install()
    {
        // rpmalloc has no Debian package, so it is usually missing; where someone installed it, it must work instead.
        if (ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Rpmalloc, out ExternalNativeAllocator? present))
        {
            byte* block = present.Allocate(64, 16);
            present.Deallocate(block, 64, 16);
            return;
        }

        var error = Assert.Throws<DllNotFoundException>(() => ExternalNativeAllocator.Load(NativeAllocatorLibrary.Rpmalloc));
        Assert.Contains("librpmalloc.so", error.Message, StringComparison.Ordinal);
        Assert.Contains("LD_LIBRARY_PATH", error.Message, StringComparison.Ordinal);
        Assert.False(ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Rpmalloc, out ExternalNativeAllocator? none, out string? failure));
        Assert.Null(none);
        Assert.Equal(error.Message, failure);
    }

    [Fact]
    public void The_missing_library_messages_name_the_package_and_for_jemalloc_the_tunable()
    {
        // The jemalloc message cannot be provoked in this process (its test host starts with the tunable), so its text is checked directly.
        string jemalloc = Interop.NativeAllocatorExports.Hint(NativeAllocatorLibrary.Jemalloc);
        Assert.Contains("libjemalloc2", jemalloc, StringComparison.Ordinal);
        Assert.Contains("GLIBC_TUNABLES=glibc.rtld.optional_static_tls=65536", jemalloc, StringComparison.Ordinal);
        Assert.Contains("libmimalloc2.0", Interop.NativeAllocatorExports.Hint(NativeAllocatorLibrary.Mimalloc), StringComparison.Ordinal);
        Assert.Equal("libjemalloc.so.2", Interop.NativeAllocatorExports.FileName(NativeAllocatorLibrary.Jemalloc));
    }

    [Fact]
    public void An_undefined_library_is_refused()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => ExternalNativeAllocator.Load((NativeAllocatorLibrary)42));
        Assert.Equal("library", error.ParamName);
        Assert.Contains("Mimalloc, Jemalloc, Rpmalloc", error.Message, StringComparison.Ordinal);
    }

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void An_unchecked_instance_owns_nothing_and_stays_usable_after_dispose()
    {
        ExternalNativeAllocator allocator = ExternalNativeAllocator.Load(NativeAllocatorLibrary.Mimalloc);
        Assert.False(allocator.TracksOwnership);
        Assert.Equal(NativeAllocatorLibrary.Mimalloc, allocator.Library);
        byte* block = allocator.Allocate(64, 16);
        Assert.False(allocator.Owns(block));
        allocator.Dispose();
        allocator.Deallocate(block, 64, 16);
        block = allocator.Allocate(64, 16);
        allocator.Deallocate(block, 64, 16);
        Assert.Equal(0, allocator.Statistics.BytesInUse);
    }

    [NativeAllocatorFact(NativeAllocatorLibrary.Mimalloc)]
    public void Any_library_can_be_the_switchable_allocators_global_allocator()
    {
        using ExternalNativeAllocator mimalloc = ExternalNativeAllocator.Load(NativeAllocatorLibrary.Mimalloc, trackOwnership: true);
        var switchable = new SwitchableAllocator(mimalloc);
        byte* block = switchable.Allocate(256, 32);
        Assert.True(mimalloc.Owns(block));
        block = switchable.GrowingReallocate(block, 256, 4096, 32);
        Assert.True(mimalloc.Owns(block));
        switchable.Deallocate(block, 4096, 32);
        Assert.Equal(0, mimalloc.Statistics.BytesInUse);
        Assert.Equal(mimalloc.Statistics.AllocationCount, mimalloc.Statistics.DeallocationCount);
    }
}
