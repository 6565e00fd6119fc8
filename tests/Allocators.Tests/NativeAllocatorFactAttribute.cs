namespace AllocHosting.Allocators.Tests;

/// <summary>
/// A fact that runs only where <see cref="ExternalNativeAllocator"/> can load the given library, and
/// is skipped elsewhere with the loader's reason (file, Debian package, and for jemalloc the
/// <c>GLIBC_TUNABLES</c> setting, which the test run sets through <c>Allocators.Tests.runsettings</c>).
/// </summary>
public sealed class NativeAllocatorFactAttribute : FactAttribute
{
    public NativeAllocatorFactAttribute(NativeAllocatorLibrary library)
    {
        if (!ExternalNativeAllocator.TryLoad(library, out _, out string? failure))
        {
            Skip = failure;
        }
    }
}
