namespace AllocHosting.Allocators.MemorySources;

/// <summary>The size check shared by the memory sources: one rule and one message for every source.</summary>
internal static class SourceSize
{
    /// <summary>Throws unless <paramref name="size"/> is between 1 and <see cref="Allocator.MaximumSize"/>.</summary>
    /// <param name="size">The requested size.</param>
    /// <param name="parameterName">The caller's parameter, named in the exception.</param>
    /// <param name="what">What the size measures in the message: "region" or "slot".</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or above <see cref="Allocator.MaximumSize"/>.</exception>
    public static void Validate(nuint size, string parameterName, string what = "region")
    {
        if (size == 0 || size > Allocator.MaximumSize)
        {
            throw new ArgumentOutOfRangeException(parameterName, size, $"A {what} must be between 1 and {Allocator.MaximumSize} bytes.");
        }
    }

    /// <summary>Validates <paramref name="size"/> like <see cref="Validate"/>, then rounds it up to <paramref name="granularity"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="size"/> is zero or above <see cref="Allocator.MaximumSize"/>.</exception>
    public static nuint Round(nuint size, nuint granularity, string parameterName)
    {
        Validate(size, parameterName);
        return Allocator.AlignUp(size, granularity);
    }
}
