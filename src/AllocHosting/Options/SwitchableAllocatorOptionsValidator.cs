using System.Numerics;
using Microsoft.Extensions.Options;

namespace AllocHosting;

/// <summary>
/// Validates <see cref="SwitchableAllocatorOptions"/> at start-up; every message names the setting
/// and its allowed range (the range constants of <see cref="SwitchableAllocatorOptions"/>, which
/// its property docs cite).
/// </summary>
internal sealed class SwitchableAllocatorOptionsValidator : IValidateOptions<SwitchableAllocatorOptions>
{
    private const string Prefix = SwitchableAllocatorOptions.SectionName + ":";

    public ValidateOptionsResult Validate(string? name, SwitchableAllocatorOptions options)
    {
        var failures = new List<string>();
        CheckDefined(failures, nameof(options.ArenaKind), options.ArenaKind);

        if (options.BitSetBlockSize < SwitchableAllocatorOptions.MinBitSetBlockSize || options.BitSetBlockSize > SwitchableAllocatorOptions.MaxBitSetBlockSize || !BitOperations.IsPow2(options.BitSetBlockSize))
        {
            failures.Add($"{Prefix}BitSetBlockSize is {options.BitSetBlockSize}; allowed: a power of two from {SwitchableAllocatorOptions.MinBitSetBlockSize} to {SwitchableAllocatorOptions.MaxBitSetBlockSize}.");
        }

        const int unit = SwitchableAllocatorOptions.ArenaSizeUnit;
        if (options.InitialArenaSize < unit || options.InitialArenaSize > SwitchableAllocatorOptions.MaxInitialArenaSize || options.InitialArenaSize % unit != 0)
        {
            failures.Add($"{Prefix}InitialArenaSize is {options.InitialArenaSize}; allowed: a multiple of {unit} from {unit} to {SwitchableAllocatorOptions.MaxInitialArenaSize} bytes.");
        }

        if (options.MemoryBudget < options.InitialArenaSize || options.MemoryBudget > SwitchableAllocatorOptions.MaxMemoryBudget)
        {
            failures.Add($"{Prefix}MemoryBudget is {options.MemoryBudget}; allowed: from InitialArenaSize ({options.InitialArenaSize}) to {SwitchableAllocatorOptions.MaxMemoryBudget} bytes.");
        }

        if (options.MaxArenaSizePerRequest < options.InitialArenaSize || options.MaxArenaSizePerRequest > options.MemoryBudget)
        {
            failures.Add($"{Prefix}MaxArenaSizePerRequest is {options.MaxArenaSizePerRequest}; allowed: from InitialArenaSize ({options.InitialArenaSize}) to MemoryBudget ({options.MemoryBudget}) bytes.");
        }

        CheckDefined(failures, nameof(options.OverflowPolicy), options.OverflowPolicy);
        CheckDefined(failures, nameof(options.ClearPolicy), options.ClearPolicy);
        CheckDefined(failures, nameof(options.BudgetPolicy), options.BudgetPolicy);
        CheckDefined(failures, nameof(options.Diagnostics), options.Diagnostics);

        if (options.BudgetWaitTimeout < TimeSpan.Zero || options.BudgetWaitTimeout > SwitchableAllocatorOptions.MaxBudgetWaitTimeout)
        {
            failures.Add($"{Prefix}BudgetWaitTimeout is {options.BudgetWaitTimeout}; allowed: from {TimeSpan.Zero} to {SwitchableAllocatorOptions.MaxBudgetWaitTimeout}.");
        }

        if (options.BudgetQueueLimit < 0 || options.BudgetQueueLimit > SwitchableAllocatorOptions.MaxBudgetQueueLimit)
        {
            failures.Add($"{Prefix}BudgetQueueLimit is {options.BudgetQueueLimit}; allowed: from 0 to {SwitchableAllocatorOptions.MaxBudgetQueueLimit} waiting rents.");
        }

        if (options.RetryAfter < SwitchableAllocatorOptions.MinRetryAfter || options.RetryAfter > SwitchableAllocatorOptions.MaxRetryAfter || options.RetryAfter.Ticks % TimeSpan.TicksPerSecond != 0)
        {
            failures.Add($"{Prefix}RetryAfter is {options.RetryAfter}; allowed: whole seconds from {SwitchableAllocatorOptions.MinRetryAfter} to {SwitchableAllocatorOptions.MaxRetryAfter}.");
        }

        CheckDefined(failures, nameof(options.NumaPlacement), options.NumaPlacement);
        CheckGlobalAllocator(failures, options.GlobalAllocator);

        if (options.ReuseDelay < TimeSpan.Zero || options.ReuseDelay > SwitchableAllocatorOptions.MaxReuseDelay)
        {
            failures.Add($"{Prefix}ReuseDelay is {options.ReuseDelay}; allowed: from 0 to {SwitchableAllocatorOptions.MaxReuseDelay}.");
        }

        if (options.IdleTrimInterval < SwitchableAllocatorOptions.MinIdleTrimInterval || options.IdleTrimInterval > SwitchableAllocatorOptions.MaxIdleTrimInterval)
        {
            failures.Add($"{Prefix}IdleTrimInterval is {options.IdleTrimInterval}; allowed: from {SwitchableAllocatorOptions.MinIdleTrimInterval} to {SwitchableAllocatorOptions.MaxIdleTrimInterval}.");
        }

        if (!(options.HealthDegradedRatio > 0 && options.HealthDegradedRatio <= 1))
        {
            failures.Add($"{Prefix}HealthDegradedRatio is {options.HealthDegradedRatio}; allowed: above 0 and at most 1.");
        }

        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }

    // A native global allocator must load here and now, so that start-up fails rather than the first allocation.
    private static void CheckGlobalAllocator(List<string> failures, GlobalAllocatorKind kind)
    {
        CheckDefined(failures, nameof(SwitchableAllocatorOptions.GlobalAllocator), kind);
        if (GlobalAllocators.Library(kind) is { } library
            && !Allocators.ExternalNativeAllocator.TryLoad(library, out _, out string? failure))
        {
            failures.Add($"{Prefix}GlobalAllocator is {kind}, but its library cannot be loaded: {failure}");
        }
    }

    // An enum setting must be one of its type's named values, which the message lists in declaration order.
    private static void CheckDefined<TEnum>(List<string> failures, string setting, TEnum value)
        where TEnum : struct, Enum
    {
        if (!Enum.IsDefined(value))
        {
            failures.Add($"{Prefix}{setting} is {value}; allowed: {string.Join(", ", Enum.GetNames<TEnum>())}.");
        }
    }
}
