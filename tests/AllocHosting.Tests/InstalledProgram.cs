namespace AllocHosting.Tests;

/// <summary>Finds a program the tests drive (Prometheus, Chromium) where Linux distributions install it, or on PATH.</summary>
internal static class InstalledProgram
{
    /// <summary>The first of <paramref name="paths"/>, then of <c>PATH</c>'s folders holding <paramref name="name"/>, that exists; null when none does or off Linux and macOS.</summary>
    public static string? Find(string name, params string[] paths)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS())
        {
            return null;
        }

        var candidates = new List<string>(paths);
        foreach (string directory in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            candidates.Add(Path.Combine(directory, name));
        }

        return candidates.FirstOrDefault(File.Exists);
    }
}
