using System.Text.RegularExpressions;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// The layout rules of docs/architecture.md ("Layout and namespaces"), checked over every source
/// file of both libraries so that a file added in the wrong shape fails here, not in review.
/// </summary>
public partial class SourceLayoutTests
{
    /// <summary>The most lines a source file may have (docs/architecture.md).</summary>
    private const int MaximumLines = 600;

    [Fact]
    public void Every_source_file_declares_one_top_level_type_named_as_the_file()
    {
        var wrong = new List<string>();
        foreach (string file in SourceFiles())
        {
            string[] types = TopLevelTypes(File.ReadAllLines(file));
            string expected = Path.GetFileNameWithoutExtension(file).Split('.')[0];
            if (types.Length != 1 || types[0] != expected)
            {
                wrong.Add($"{Relative(file)} declares [{string.Join(", ", types)}]");
            }
        }

        Assert.True(wrong.Count == 0, "One top-level type per file, named as the file:\n" + string.Join("\n", wrong));
    }

    [Fact]
    public void Every_source_file_is_in_the_namespace_its_folder_and_kind_give()
    {
        var wrong = new List<string>();
        foreach (string file in SourceFiles())
        {
            string[] lines = File.ReadAllLines(file);
            string? declared = lines.Select(l => NamespacePattern().Match(l)).FirstOrDefault(m => m.Success)?.Groups[1].Value;
            string expected = ExpectedNamespace(file, lines);
            if (declared != expected)
            {
                wrong.Add($"{Relative(file)}: namespace {declared ?? "(none)"}, expected {expected}");
            }
        }

        Assert.True(wrong.Count == 0, "The namespace rule of docs/architecture.md:\n" + string.Join("\n", wrong));
    }

    [Fact]
    public void No_source_file_runs_past_the_line_limit()
    {
        var wrong = SourceFiles()
            .Select(f => (File: Relative(f), Lines: File.ReadAllLines(f).Length))
            .Where(f => f.Lines > MaximumLines)
            .Select(f => $"{f.File}: {f.Lines} lines")
            .ToList();

        Assert.True(wrong.Count == 0, $"Source files longer than {MaximumLines} lines:\n" + string.Join("\n", wrong));
    }

    [Fact]
    public void Every_out_of_line_method_is_a_slow_path_or_a_throw_helper()
    {
        var wrong = new List<string>();
        foreach (string file in SourceFiles())
        {
            string[] lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                if (!lines[i].Contains("MethodImplOptions.NoInlining", StringComparison.Ordinal))
                {
                    continue;
                }

                // The declaration is the next line that is not an attribute or a comment.
                string declaration = lines.Skip(i + 1).First(l => !l.TrimStart().StartsWith('[') && !l.TrimStart().StartsWith("//", StringComparison.Ordinal));
                Match name = MethodNamePattern().Match(declaration);
                if (!name.Success || !(name.Groups[1].Value.EndsWith("Slow", StringComparison.Ordinal) || name.Groups[1].Value.StartsWith("Throw", StringComparison.Ordinal)))
                {
                    wrong.Add($"{Relative(file)}:{i + 2}: {declaration.Trim()}");
                }
            }
        }

        Assert.True(wrong.Count == 0, "NoInlining methods must be named ...Slow (slow paths) or Throw... (throw helpers):\n" + string.Join("\n", wrong));
    }

    [Fact]
    public void Native_calls_are_declared_only_in_Interop_and_unsafe_code_stays_in_the_allocators()
    {
        var wrong = new List<string>();
        foreach (string file in SourceFiles())
        {
            string relative = Relative(file);
            string text = File.ReadAllText(file);
            if ((text.Contains("[LibraryImport", StringComparison.Ordinal) || text.Contains("[DllImport", StringComparison.Ordinal))
                && !relative.StartsWith("src/Allocators/Interop/", StringComparison.Ordinal))
            {
                wrong.Add($"{relative}: declares a native call outside Interop/");
            }

            if (relative.StartsWith("src/AllocHosting/", StringComparison.Ordinal) && UnsafePattern().IsMatch(text))
            {
                wrong.Add($"{relative}: unsafe code outside src/Allocators");
            }
        }

        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
    }

    [Fact]
    public void The_rule_sees_every_library_source_file()
    {
        // Guards the other tests against passing on an empty or wrong tree.
        string[] files = SourceFiles().Select(Relative).ToArray();
        Assert.Contains("src/Allocators/Core/IAllocator.cs", files);
        Assert.Contains("src/AllocHosting/Hosting/SwitchableAllocatorsServiceCollectionExtensions.cs", files);
        Assert.True(files.Length > 50, $"only {files.Length} files found");
    }

    /// <summary>
    /// The rule: a namespace is what a user imports, a folder what a reader finds. Everything in
    /// src/Allocators is in <c>AllocHosting.Allocators</c> except the memory sources
    /// (<c>.MemorySources</c>, configured separately) and the native calls (<c>.Interop</c>);
    /// everything in src/AllocHosting is in <c>AllocHosting</c> except public extension classes,
    /// which live in the namespace of the type they extend, as ASP.NET Core's own do.
    /// </summary>
    private static string ExpectedNamespace(string file, string[] lines)
    {
        string relative = Relative(file);
        if (relative.StartsWith("src/Allocators/", StringComparison.Ordinal))
        {
            string folder = relative.Split('/')[2];
            return folder is "MemorySources" or "Interop" ? "AllocHosting.Allocators." + folder : "AllocHosting.Allocators";
        }

        string text = string.Join("\n", lines);
        if (lines.Any(l => l.StartsWith("public static class ", StringComparison.Ordinal)) && ExtensionMethodPattern().IsMatch(text))
        {
            if (text.Contains("this IServiceCollection", StringComparison.Ordinal) || text.Contains("this ISignalRServerBuilder", StringComparison.Ordinal))
            {
                return "Microsoft.Extensions.DependencyInjection";
            }

            if (text.Contains("this MeterProviderBuilder", StringComparison.Ordinal))
            {
                return "OpenTelemetry.Metrics";
            }

            return "Microsoft.AspNetCore.Builder";
        }

        return "AllocHosting";
    }

    private static string[] TopLevelTypes(string[] lines) => lines
        .Select(l => TypePattern().Match(l))
        .Where(m => m.Success)
        .Select(m => m.Groups["name"].Value)
        .ToArray();

    private static IEnumerable<string> SourceFiles()
    {
        string src = Path.Combine(RepositoryRoot(), "src");
        return Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
    }

    private static string Relative(string file) => Path.GetRelativePath(RepositoryRoot(), file).Replace('\\', '/');

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

    [GeneratedRegex(@"^namespace ([A-Za-z0-9_.]+);")]
    private static partial Regex NamespacePattern();

    [GeneratedRegex(@"^(public|internal|file)[a-z ]* (class|struct|interface|enum|record( struct| class)?|delegate [^(]+?) (?<name>[A-Za-z0-9_]+)\b")]
    private static partial Regex TypePattern();

    [GeneratedRegex(@"([A-Za-z0-9_]+)\s*(<[^>]*>)?\(")]
    private static partial Regex MethodNamePattern();

    [GeneratedRegex(@"\bunsafe\b|\bfixed\s*\(|\bstackalloc\b.*\*")]
    private static partial Regex UnsafePattern();

    [GeneratedRegex(@"(\(|^\s+)this [A-Z]", RegexOptions.Multiline)]
    private static partial Regex ExtensionMethodPattern();
}
