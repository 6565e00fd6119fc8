namespace AllocHosting.Tests;

/// <summary>A fact that runs only where a Chromium browser is installed (Debian package <c>chromium</c>) and is skipped, saying why, elsewhere.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public ChromiumFactAttribute()
    {
        if (ChromiumBinary.Path is null)
        {
            Skip = "Needs a Chromium browser (/usr/bin/chromium from the Debian package 'chromium', 'chromium' on PATH, or CHROMIUM_PATH); .ci/run installs it.";
        }
    }
}

/// <summary>Where the Chromium binary is, if anywhere: <c>CHROMIUM_PATH</c>, then the usual Linux places and PATH.</summary>
internal static class ChromiumBinary
{
    public static string? Path { get; } = Find();

    private static string? Find()
    {
        string? configured = Environment.GetEnvironmentVariable("CHROMIUM_PATH");
        if (!string.IsNullOrEmpty(configured))
        {
            return File.Exists(configured) ? configured : null;
        }

        return InstalledProgram.Find("chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser");
    }
}
