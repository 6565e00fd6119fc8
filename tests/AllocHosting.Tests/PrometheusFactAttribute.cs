namespace AllocHosting.Tests;

/// <summary>A fact that runs only where a Prometheus server binary is installed (Debian package <c>prometheus</c>) and is skipped, saying why, elsewhere.</summary>
public sealed class PrometheusFactAttribute : FactAttribute
{
    public PrometheusFactAttribute()
    {
        if (PrometheusBinary.Path is null)
        {
            Skip = "Needs a Prometheus server binary (/usr/bin/prometheus from the Debian package 'prometheus', or 'prometheus' on PATH); .ci/run installs it.";
        }
    }
}

/// <summary>Where the Prometheus server binary is, if anywhere.</summary>
internal static class PrometheusBinary
{
    public static string? Path { get; } = InstalledProgram.Find("prometheus", "/usr/bin/prometheus", "/usr/local/bin/prometheus");
}
