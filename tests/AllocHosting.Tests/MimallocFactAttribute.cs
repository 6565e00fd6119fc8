using AllocHosting.Allocators;

namespace AllocHosting.Tests;

/// <summary>A fact that runs only where mimalloc can be loaded (Debian package <c>libmimalloc2.0</c>, which .ci/run installs) and is skipped, with the loader's reason, elsewhere.</summary>
public sealed class MimallocFactAttribute : FactAttribute
{
    public MimallocFactAttribute()
    {
        if (!ExternalNativeAllocator.TryLoad(NativeAllocatorLibrary.Mimalloc, out _, out string? failure))
        {
            Skip = failure;
        }
    }
}
