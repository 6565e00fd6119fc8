namespace AllocHosting.Tests;

/// <summary>The collection of <see cref="BudgetStarvationKestrelTests"/>: not run in parallel with other tests (its bound is a response time).</summary>
[CollectionDefinition(BudgetStarvationKestrelTests.Name, DisableParallelization = true)]
public sealed class BudgetStarvationCollection
{
}
