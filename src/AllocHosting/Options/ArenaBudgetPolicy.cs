namespace AllocHosting;

/// <summary>What a rent does when the process-wide arena budget (<see cref="SwitchableAllocatorOptions.MemoryBudget"/>) is spent.</summary>
public enum ArenaBudgetPolicy
{
    /// <summary>
    /// Asynchronous rents wait, without blocking a thread, in a FIFO queue of at most
    /// <see cref="SwitchableAllocatorOptions.BudgetQueueLimit"/> for up to <see cref="SwitchableAllocatorOptions.BudgetWaitTimeout"/>
    /// for another request to give memory back, then reject; synchronous rents reject at once. The default.
    /// </summary>
    Wait,

    /// <summary>Reject at once: the request ends with 503 Service Unavailable and a Retry-After header.</summary>
    Reject,
}
