namespace AllocHosting.Tests;

/// <summary>
/// One "## …" section of README.md and its C# code blocks, for the tests that compile a section's
/// examples: each block must appear, lines trimmed and blank lines dropped, in the test file that runs it.
/// </summary>
internal sealed class ReadmeSection
{
    private ReadmeSection(string text, string[] codeBlocks)
    {
        Text = text;
        CodeBlocks = codeBlocks;
    }

    /// <summary>The section, from its heading to the next "## " heading.</summary>
    public string Text { get; }

    /// <summary>The fenced code blocks of the section, fence language line included.</summary>
    public string[] CodeBlocks { get; }

    /// <summary>The section under <paramref name="heading"/> (asserting it exists and names <paramref name="testClass"/>, which compiles it).</summary>
    public static ReadmeSection Read(string heading, string testClass)
    {
        string readme = File.ReadAllText(Path.Combine(SampleProcess.RepositoryRoot(), "README.md"));
        int start = readme.IndexOf("\n" + heading, StringComparison.Ordinal);
        Assert.True(start >= 0, "README.md has the section");
        int end = readme.IndexOf("\n## ", start + 1, StringComparison.Ordinal);
        string section = readme[start..(end < 0 ? readme.Length : end)];
        Assert.Contains(testClass, section, StringComparison.Ordinal);
        return new ReadmeSection(section, section.Split("```").Where((_, i) => i % 2 == 1).ToArray());
    }

    /// <summary>Asserts that every code block is C# and appears in the test file <paramref name="testFile"/> (under tests/AllocHosting.Tests).</summary>
    public void AssertEveryBlockIsIn(string testFile)
    {
        string source = Normalise(File.ReadAllText(Path.Combine(SampleProcess.RepositoryRoot(), "tests", "AllocHosting.Tests", testFile)));
        Assert.All(CodeBlocks, block =>
        {
            Assert.StartsWith("csharp\n", block, StringComparison.Ordinal);
            Assert.Contains(Normalise(block["csharp\n".Length..]), source, StringComparison.Ordinal);
        });
    }

    // Lines trimmed, blank lines dropped: indentation differs between the README and the code of the tests.
    private static string Normalise(string code) =>
        string.Join('\n', code.ReplaceLineEndings("\n").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0));
}
