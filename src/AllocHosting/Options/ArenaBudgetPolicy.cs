namespace AllocHosting;

/// <summary>What a rent does when the process-wide arena budget (<see cref="SwitchableAllocatorOptions.MemoryBudget"/>) is spent.</summary>
public enum ArenaBudgetPolicy
{
    /// <summary>Wait up to <see cref="SwitchableAllocatorOptions.BudgetWaitTimeout"/> for another request to give a chunk back, then reject. The default.</summary>
    Wait,

    /// <summary>Reject at once: the request ends with 503 Service Unavailable and a Retry-After header.</summary>
    Reject,
}
