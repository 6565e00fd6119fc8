namespace AllocHosting;

/// <summary>What a rent does when the request's arena has reached <see cref="SwitchableAllocatorOptions.MaxArenaSizePerRequest"/> (or the rent is larger than one chunk).</summary>
public enum ArenaOverflowPolicy
{
    /// <summary>Serve the rent from the process allocator (native memory outside the arena budget), tracked and freed when the request ends. The default.</summary>
    FallBack,

    /// <summary>Refuse the rent with an <see cref="InsufficientMemoryException"/>.</summary>
    Fail,
}
