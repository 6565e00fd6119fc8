namespace AllocHosting.Allocators.Benchmarks.Verdicts;

/// <summary>
/// A numerator or denominator: one method, or several joined by <c>+</c> (a sum of mean times)
/// or by <c>*</c> (a product, for ratios of ratios such as one scaling against another). A method
/// of another class is written <c>Class.Method</c>.
/// </summary>
internal sealed class VerdictExpression
{
    private VerdictExpression(IReadOnlyList<VerdictTerm> terms, char join)
    {
        Terms = terms;
        Join = join;
    }

    public IReadOnlyList<VerdictTerm> Terms { get; }

    /// <summary><c>+</c> or <c>*</c>.</summary>
    public char Join { get; }

    public static VerdictExpression Parse(string text, string defaultClass)
    {
        char join = text.Contains('*') ? '*' : '+';
        if (text.Contains('*') && text.Contains('+'))
        {
            throw new FormatException($"'{text}' mixes + and *; use one.");
        }

        var terms = new List<VerdictTerm>();
        foreach (string part in text.Split(join, StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int dot = part.LastIndexOf('.');
            terms.Add(dot < 0 ? new VerdictTerm(defaultClass, part) : new VerdictTerm(part[..dot], part[(dot + 1)..]));
        }

        if (terms.Count == 0)
        {
            throw new FormatException("An empty numerator or denominator.");
        }

        return new VerdictExpression(terms, join);
    }

    /// <summary>The value from the measured means, or null when one of them was not measured.</summary>
    public double? Evaluate(Func<VerdictTerm, double?> mean)
    {
        double value = Join == '*' ? 1 : 0;
        foreach (VerdictTerm term in Terms)
        {
            if (mean(term) is not double measured)
            {
                return null;
            }

            value = Join == '*' ? value * measured : value + measured;
        }

        return value;
    }

    public override string ToString() => string.Join($" {Join} ", Terms.Select(term => term.Method));
}
