using System.Globalization;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// How long the tests of the <c>Stress</c> category run: <c>ALLOCHOSTING_STRESS_SECONDS</c> seconds per
/// test case when the variable is set (a long run by command:
/// <c>ALLOCHOSTING_STRESS_SECONDS=600 dotnet test --filter Category=Stress</c>), otherwise a short
/// default that keeps them in the ordinary <c>dotnet test</c> (a few seconds for the whole category).
/// Every stress loop is bounded by this time and by a count, whichever comes first.
/// </summary>
public static class StressBudget
{
    /// <summary>The environment variable that sets the seconds per stress test case.</summary>
    public const string Variable = "ALLOCHOSTING_STRESS_SECONDS";

    /// <summary>Whether a long run was asked for (the variable is set to a positive number).</summary>
    public static bool IsLongRun => Configured is not null;

    /// <summary>The time a test case runs for: the configured seconds, or <paramref name="shortDefault"/> in the ordinary run.</summary>
    public static TimeSpan For(TimeSpan shortDefault) => Configured ?? shortDefault;

    /// <summary>A bound on a stress loop's count, generous enough never to cut a timed run short: <paramref name="perSecond"/> times the seconds of <paramref name="budget"/>, at least <paramref name="perSecond"/>.</summary>
    public static long CountFor(TimeSpan budget, long perSecond) => Math.Max(perSecond, (long)(budget.TotalSeconds * perSecond));

    private static TimeSpan? Configured =>
        double.TryParse(Environment.GetEnvironmentVariable(Variable), NumberStyles.Float, CultureInfo.InvariantCulture, out double seconds) && seconds > 0
            ? TimeSpan.FromSeconds(Math.Min(seconds, TimeSpan.FromDays(1).TotalSeconds))
            : null;
}
