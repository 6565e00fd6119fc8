using System.Text.RegularExpressions;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// benchmarks/verdicts/targets.tsv names benchmark methods by class and method name; a rename in
/// the benchmarks would silently turn a verdict into "not run". These tests keep the file and the
/// benchmark sources in step (the benchmarks themselves are never run by the test suite).
/// </summary>
public sealed class VerdictTargetsTests
{
    [Fact]
    public void Every_target_names_benchmark_methods_that_exist()
    {
        string root = RepositoryRoot();
        string benchmarks = Path.Combine(root, "benchmarks", "Allocators.Benchmarks");
        string[] sources = Directory.EnumerateFiles(benchmarks, "*.cs", SearchOption.AllDirectories)
            .Where(file => !file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !file.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Select(File.ReadAllText)
            .ToArray();

        var problems = new List<string>();
        int targets = 0;
        foreach ((int line, string[] columns) in Targets(root))
        {
            targets++;
            if (columns.Length != 8)
            {
                problems.Add($"line {line}: {columns.Length} columns, expected 8");
                continue;
            }

            string relation = columns[6];
            if (relation is not ("<=" or ">=" or "ns<=" or "bytes<="))
            {
                problems.Add($"line {line}: unknown relation '{relation}'");
            }

            if (!double.TryParse(columns[7], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out _))
            {
                problems.Add($"line {line}: threshold '{columns[7]}' is not a number");
            }

            IEnumerable<string> expressions = relation is "ns<=" or "bytes<=" ? [columns[4]] : [columns[4], columns[5]];
            foreach (string term in expressions.SelectMany(expression => expression.Split(['+', '*'], StringSplitOptions.TrimEntries)))
            {
                int dot = term.LastIndexOf('.');
                string type = dot < 0 ? columns[2] : term[..dot];
                string method = dot < 0 ? term : term[(dot + 1)..];
                var benchmark = new Regex($@"\[Benchmark\b[^\]]*\](\s*\[[^\]]*\])*\s*public\s+[^(;]*\b{Regex.Escape(method)}\s*\(");
                bool found = sources.Any(source => Regex.IsMatch(source, $@"\bclass\s+{Regex.Escape(type)}\b") && benchmark.IsMatch(source));
                if (!found)
                {
                    problems.Add($"line {line}: no [Benchmark] method {type}.{method}");
                }
            }
        }

        Assert.True(targets >= 20, $"targets.tsv lists only {targets} targets");
        Assert.True(problems.Count == 0, string.Join(Environment.NewLine, problems));
    }

    private static IEnumerable<(int Line, string[] Columns)> Targets(string root)
    {
        int line = 0;
        foreach (string text in File.ReadLines(Path.Combine(root, "benchmarks", "verdicts", "targets.tsv")))
        {
            line++;
            if (text.Length > 0 && !text.StartsWith('#'))
            {
                yield return (line, text.Split('\t'));
            }
        }
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "AllocHosting.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("AllocHosting.sln not found above " + AppContext.BaseDirectory);
    }
}
