using System.Numerics;
using Microsoft.Extensions.Options;

namespace AllocHosting;

/// <summary>Validates <see cref="SwitchableAllocatorOptions"/> at start-up; every message names the setting and its allowed range.</summary>
internal sealed class SwitchableAllocatorOptionsValidator : IValidateOptions<SwitchableAllocatorOptions>
{
    private const string Prefix = SwitchableAllocatorOptions.SectionName + ":";
    private const long MaxBudget = 64L * 1024 * 1024 * 1024;
    private const int MaxChunk = 64 * 1024 * 1024;

    public ValidateOptionsResult Validate(string? name, SwitchableAllocatorOptions options)
    {
        var failures = new List<string>();
        if (!Enum.IsDefined(options.ArenaKind))
        {
            failures.Add($"{Prefix}ArenaKind is {options.ArenaKind}; allowed: Bump, BitSet.");
        }

        if (options.BitSetBlockSize < 8 || options.BitSetBlockSize > 4096 || !BitOperations.IsPow2(options.BitSetBlockSize))
        {
            failures.Add($"{Prefix}BitSetBlockSize is {options.BitSetBlockSize}; allowed: a power of two from 8 to 4096.");
        }

        if (options.InitialArenaSize < 4096 || options.InitialArenaSize > MaxChunk || options.InitialArenaSize % 4096 != 0)
        {
            failures.Add($"{Prefix}InitialArenaSize is {options.InitialArenaSize}; allowed: a multiple of 4096 from 4096 to {MaxChunk} bytes.");
        }

        if (options.MemoryBudget < options.InitialArenaSize || options.MemoryBudget > MaxBudget)
        {
            failures.Add($"{Prefix}MemoryBudget is {options.MemoryBudget}; allowed: from InitialArenaSize ({options.InitialArenaSize}) to {MaxBudget} bytes.");
        }

        if (options.MaxArenaSizePerRequest < options.InitialArenaSize || options.MaxArenaSizePerRequest > options.MemoryBudget)
        {
            failures.Add($"{Prefix}MaxArenaSizePerRequest is {options.MaxArenaSizePerRequest}; allowed: from InitialArenaSize ({options.InitialArenaSize}) to MemoryBudget ({options.MemoryBudget}) bytes.");
        }

        if (!Enum.IsDefined(options.OverflowPolicy))
        {
            failures.Add($"{Prefix}OverflowPolicy is {options.OverflowPolicy}; allowed: FallBack, Fail.");
        }

        if (!Enum.IsDefined(options.ClearPolicy))
        {
            failures.Add($"{Prefix}ClearPolicy is {options.ClearPolicy}; allowed: ClearUsed, None.");
        }

        if (!Enum.IsDefined(options.BudgetPolicy))
        {
            failures.Add($"{Prefix}BudgetPolicy is {options.BudgetPolicy}; allowed: Wait, Reject.");
        }

        if (options.BudgetWaitTimeout < TimeSpan.Zero || options.BudgetWaitTimeout > TimeSpan.FromSeconds(10))
        {
            failures.Add($"{Prefix}BudgetWaitTimeout is {options.BudgetWaitTimeout}; allowed: from 00:00:00 to 00:00:10.");
        }

        if (options.RetryAfter < TimeSpan.FromSeconds(1) || options.RetryAfter > TimeSpan.FromHours(1) || options.RetryAfter.Ticks % TimeSpan.TicksPerSecond != 0)
        {
            failures.Add($"{Prefix}RetryAfter is {options.RetryAfter}; allowed: whole seconds from 00:00:01 to 01:00:00.");
        }

        if (!Enum.IsDefined(options.NumaPlacement))
        {
            failures.Add($"{Prefix}NumaPlacement is {options.NumaPlacement}; allowed: LocalToRequestThread, ProcessDefault, Interleave.");
        }

        if (options.IdleTrimInterval < TimeSpan.FromSeconds(1) || options.IdleTrimInterval > TimeSpan.FromDays(1))
        {
            failures.Add($"{Prefix}IdleTrimInterval is {options.IdleTrimInterval}; allowed: from 00:00:01 to 1.00:00:00.");
        }

        if (!(options.HealthDegradedRatio > 0 && options.HealthDegradedRatio <= 1))
        {
            failures.Add($"{Prefix}HealthDegradedRatio is {options.HealthDegradedRatio}; allowed: above 0 and at most 1.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
