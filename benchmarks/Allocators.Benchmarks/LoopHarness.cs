using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using BenchmarkDotNet.Attributes;

namespace AllocHosting.Allocators.Benchmarks;

/// <summary>
/// Runs one benchmark method in a plain loop for a fixed time, outside BenchmarkDotNet, so that a
/// sampling profiler sees nothing else:
/// <c>--loop Class.Method [seconds] [Param=Value ...]</c>, for example
/// <c>DOTNET_PerfMapEnabled=1 perf record -g dotnet run -c Release --no-build -- --loop RequestArenaBenchmarks.ArenaBump 10</c>.
/// It calls the class's <see cref="GlobalSetupAttribute"/> method, loops (tiering settles during
/// the first second, which is not timed), prints the mean time per call, then calls the
/// <see cref="GlobalCleanupAttribute"/> method. Not a measurement to quote: no statistics, no peers.
/// A method that returns a task is called without awaiting it: fit for the benchmarks here whose
/// tasks complete synchronously (their bodies come from an in-memory reader), not for others.
/// </summary>
internal static class LoopHarness
{
    public static int Run(string[] args)
    {
        if (args.Length < 2 || args[1].Split('.') is not [string className, string methodName])
        {
            Console.Error.WriteLine("usage: --loop Class.Method [seconds] [Param=Value ...]");
            return 2;
        }

        double seconds = args.Length > 2 && double.TryParse(args[2], CultureInfo.InvariantCulture, out double s) ? s : 5;
        Type? type = typeof(LoopHarness).Assembly.GetTypes().FirstOrDefault(t => t.Name == className);
        MethodInfo? method = type?.GetMethod(methodName, BindingFlags.Public | BindingFlags.Instance);
        if (type is null || method is null || method.GetParameters().Length != 0)
        {
            Console.Error.WriteLine($"No parameterless public method {methodName} on a class {className}.");
            return 2;
        }

        object instance = Activator.CreateInstance(type)!;
        foreach (string assignment in args.Skip(3))
        {
            string[] parts = assignment.Split('=', 2);
            PropertyInfo? property = parts.Length == 2 ? type.GetProperty(parts[0]) : null;
            if (property is null)
            {
                Console.Error.WriteLine($"No parameter property for '{assignment}'.");
                return 2;
            }

            property.SetValue(instance, Convert.ChangeType(parts[1], property.PropertyType, CultureInfo.InvariantCulture));
        }

        InvokeMarked<GlobalSetupAttribute>(type, instance);
        (long calls, TimeSpan elapsed) = method.ReturnType == typeof(void)
            ? Timed(method.CreateDelegate<Action>(instance), seconds)
            : ((long, TimeSpan))typeof(LoopHarness).GetMethod(nameof(TimedValue), BindingFlags.NonPublic | BindingFlags.Static)!
                .MakeGenericMethod(method.ReturnType)
                .Invoke(null, [method.CreateDelegate(typeof(Func<>).MakeGenericType(method.ReturnType), instance), seconds])!;
        Console.WriteLine($"{className}.{methodName}: {calls:N0} calls in {elapsed.TotalSeconds:F2} s, {elapsed.TotalNanoseconds / calls:F1} ns per call");
        InvokeMarked<GlobalCleanupAttribute>(type, instance);
        return 0;
    }

    // The first second (tiering, caches) is not timed.
    private static (long Calls, TimeSpan Elapsed) Timed(Action call, double seconds) =>
        TimedValue<int>(() => { call(); return 0; }, seconds);

    private static (long Calls, TimeSpan Elapsed) TimedValue<T>(Func<T> call, double seconds)
    {
        Loop(call, TimeSpan.FromSeconds(1));
        return Loop(call, TimeSpan.FromSeconds(seconds));
    }

    private static (long Calls, TimeSpan Elapsed) Loop<T>(Func<T> call, TimeSpan duration)
    {
        long calls = 0;
        T? last = default;
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < duration)
        {
            for (int i = 0; i < 1000; i++)
            {
                last = call();
            }

            calls += 1000;
        }

        TimeSpan elapsed = watch.Elapsed;
        GC.KeepAlive(last);
        return (calls, elapsed);
    }

    private static void InvokeMarked<TAttribute>(Type type, object instance)
        where TAttribute : Attribute
    {
        foreach (MethodInfo method in type.GetMethods(BindingFlags.Public | BindingFlags.Instance))
        {
            if (method.GetCustomAttribute<TAttribute>() is not null)
            {
                method.Invoke(instance, null);
            }
        }
    }
}
