namespace AllocHosting.Allocators.MemorySources;

/// <summary>Thrown when a memory source cannot provide a region (the operating system refused it, or every slot is taken).</summary>
public sealed class MemorySourceExhaustedException : OutOfMemoryException
{
    /// <summary>Creates the exception with a default message.</summary>
    public MemorySourceExhaustedException()
        : base("The memory source is exhausted.")
    {
        SourceName = string.Empty;
    }

    /// <summary>Creates the exception with a message.</summary>
    public MemorySourceExhaustedException(string message)
        : base(message)
    {
        SourceName = string.Empty;
    }

    /// <summary>Creates the exception with a message and its cause.</summary>
    public MemorySourceExhaustedException(string message, Exception innerException)
        : base(message, innerException)
    {
        SourceName = string.Empty;
    }

    /// <summary>Creates the exception for a region a source could not provide.</summary>
    /// <param name="sourceName">The source that refused.</param>
    /// <param name="requestedSize">Bytes requested.</param>
    /// <param name="reason">Why, for example the operating system's error.</param>
    public MemorySourceExhaustedException(string sourceName, ulong requestedSize, string reason)
        : base($"{sourceName} could not provide {requestedSize} bytes: {reason}")
    {
        SourceName = sourceName;
        RequestedSize = requestedSize;
    }

    /// <summary>The source that refused.</summary>
    public string SourceName { get; }

    /// <summary>Bytes requested.</summary>
    public ulong RequestedSize { get; }
}
