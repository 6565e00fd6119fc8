using System.Globalization;

namespace AllocHosting.Allocators.Benchmarks.Verdicts;

/// <summary>
/// One target of docs/benchmarks.md, as a line of benchmarks/verdicts/targets.tsv: the figure is
/// <see cref="Numerator"/> ÷ <see cref="Denominator"/> of the mean time per operation (each a
/// sum or a product of benchmark methods), compared with <see cref="Threshold"/>; or, with the
/// relations <c>ns&lt;=</c> and <c>bytes&lt;=</c>, the numerator's own time or GC bytes.
/// </summary>
internal sealed record VerdictTarget(
    string Section,
    string Name,
    string Class,
    string Parameters,
    VerdictExpression Numerator,
    VerdictExpression? Denominator,
    string Relation,
    double Threshold)
{
    public static IReadOnlyList<VerdictTarget> ReadAll(string path)
    {
        var targets = new List<VerdictTarget>();
        int lineNumber = 0;
        foreach (string line in File.ReadLines(path))
        {
            lineNumber++;
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            string[] columns = line.Split('\t');
            if (columns.Length != 8)
            {
                throw new FormatException($"{path}:{lineNumber}: expected 8 tab-separated columns, found {columns.Length}.");
            }

            string relation = columns[6];
            if (relation is not ("<=" or ">=" or "ns<=" or "bytes<="))
            {
                throw new FormatException($"{path}:{lineNumber}: unknown relation '{relation}' (use <=, >=, ns<= or bytes<=).");
            }

            if (!double.TryParse(columns[7], NumberStyles.Float, CultureInfo.InvariantCulture, out double threshold))
            {
                throw new FormatException($"{path}:{lineNumber}: threshold '{columns[7]}' is not a number.");
            }

            string benchmarkClass = columns[2];
            bool absolute = relation is "ns<=" or "bytes<=";
            targets.Add(new VerdictTarget(
                columns[0],
                columns[1],
                benchmarkClass,
                columns[3],
                VerdictExpression.Parse(columns[4], benchmarkClass),
                absolute ? null : VerdictExpression.Parse(columns[5], benchmarkClass),
                relation,
                threshold));
        }

        return targets;
    }

    /// <summary>Every class.method the target needs, for BenchmarkDotNet's <c>--filter</c>.</summary>
    public IEnumerable<VerdictTerm> Terms => Denominator is null ? Numerator.Terms : Numerator.Terms.Concat(Denominator.Terms);
}
