namespace AllocHosting;

/// <summary>What a rent does when it would take the request's arena past <see cref="SwitchableAllocatorOptions.MaxArenaSizePerRequest"/>.</summary>
public enum ArenaOverflowPolicy
{
    /// <summary>Serve the rent from further chunks of the pool (pool chunks, or large chunks for rents bigger than a chunk): still counted against <see cref="SwitchableAllocatorOptions.MemoryBudget"/>, released when the request ends, and logged at Debug. The default.</summary>
    FallBack,

    /// <summary>Refuse the rent with an <see cref="InsufficientMemoryException"/>.</summary>
    Fail,
}
