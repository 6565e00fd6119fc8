namespace AllocHosting.Allocators.Benchmarks.Verdicts;

/// <summary>One benchmark method of one class, with the target's parameters (e.g. <c>Size=64</c>).</summary>
internal readonly record struct VerdictTerm(string Class, string Method)
{
    public string Filter => $"*.{Class}.{Method}";
}
