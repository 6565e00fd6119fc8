namespace AllocHosting.Allocators;

/// <summary>Thrown when an allocator has no room left for a request. The allocator is unchanged.</summary>
public sealed class AllocatorExhaustedException : OutOfMemoryException
{
    /// <summary>Creates the exception with a default message.</summary>
    public AllocatorExhaustedException()
        : base("The allocator is exhausted.")
    {
        AllocatorName = string.Empty;
    }

    /// <summary>Creates the exception with a message.</summary>
    public AllocatorExhaustedException(string message)
        : base(message)
    {
        AllocatorName = string.Empty;
    }

    /// <summary>Creates the exception with a message and the exception that caused it.</summary>
    public AllocatorExhaustedException(string message, Exception innerException)
        : base(message, innerException)
    {
        AllocatorName = string.Empty;
    }

    /// <summary>Creates the exception for a request an allocator could not satisfy.</summary>
    /// <param name="allocatorName">The type (or name) of the allocator that refused.</param>
    /// <param name="requestedSize">Bytes requested.</param>
    /// <param name="alignment">Alignment requested.</param>
    public AllocatorExhaustedException(string allocatorName, ulong requestedSize, ulong alignment)
        : base($"{allocatorName} could not allocate {requestedSize} bytes aligned to {alignment}: it is exhausted.")
    {
        AllocatorName = allocatorName;
        RequestedSize = requestedSize;
        Alignment = alignment;
    }

    /// <summary>The allocator that refused the request.</summary>
    public string AllocatorName { get; }

    /// <summary>Bytes requested.</summary>
    public ulong RequestedSize { get; }

    /// <summary>Alignment requested.</summary>
    public ulong Alignment { get; }
}
