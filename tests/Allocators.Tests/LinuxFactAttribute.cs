using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>A fact that runs only where memory mapping is supported (Linux on x86-64 or arm64) and is skipped, saying why, elsewhere.</summary>
public sealed class LinuxFactAttribute : FactAttribute
{
    public LinuxFactAttribute()
    {
        if (!MemoryMapSource.IsSupported)
        {
            Skip = "Needs Linux on x86-64 or arm64: " + MemoryMapSource.UnsupportedReason;
        }
    }
}

/// <summary>A theory that runs only where memory mapping is supported, like <see cref="LinuxFactAttribute"/>.</summary>
public sealed class LinuxTheoryAttribute : TheoryAttribute
{
    public LinuxTheoryAttribute()
    {
        if (!MemoryMapSource.IsSupported)
        {
            Skip = "Needs Linux on x86-64 or arm64: " + MemoryMapSource.UnsupportedReason;
        }
    }
}
