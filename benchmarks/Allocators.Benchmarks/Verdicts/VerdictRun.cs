using System.Globalization;
using System.Text;
using AllocHosting.Allocators.Benchmarks.Peers;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using Perfolizer.Horology;

namespace AllocHosting.Allocators.Benchmarks.Verdicts;

/// <summary>
/// <c>benchmarks/verdicts.sh</c>: runs every benchmark method that a target of
/// benchmarks/verdicts/targets.tsv names, once, with quick settings and in this process (no child
/// build per class, so the whole run stays within about 15 minutes), then prints one table:
/// target, the two figures, their ratio, met or missed. It never fails on a miss: a verdict is a
/// ratio from one run on whatever machine ran it, to be read beside the load average it prints.
/// </summary>
internal static class VerdictRun
{
    public static int Run(string targetsPath, string outputPath, string[] extraArgs)
    {
        IReadOnlyList<VerdictTarget> targets = VerdictTarget.ReadAll(targetsPath);
        string[] filters = targets.SelectMany(target => target.Terms).Select(term => term.Filter).Distinct().ToArray();

        // Quick and in-process: four warm-up and five measured iterations of a quarter second.
        // In-process means no isolation between classes; ratios within one class, the only figures
        // a verdict uses, are still measured side by side.
        Job job = Job.Default
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithWarmupCount(4)
            .WithIterationCount(5)
            .WithIterationTime(TimeInterval.FromMilliseconds(250))
            .WithEnvironmentVariable("GLIBC_TUNABLES", NativePeers.JemallocTunable);
        IConfig config = DefaultConfig.Instance
            .AddJob(job)
            .AddDiagnoser(MemoryDiagnoser.Default)
            .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);

        string loadBefore = LoadAverage();
        Summary[] summaries = BenchmarkSwitcher.FromAssembly(typeof(VerdictRun).Assembly)
            .Run(["--filter", .. filters, .. extraArgs], config)
            .ToArray();
        string loadAfter = LoadAverage();

        BenchmarkReport[] reports = summaries.SelectMany(summary => summary.Reports).ToArray();
        string table = Format(targets, reports, loadBefore, loadAfter);
        Console.WriteLine();
        Console.WriteLine(table);
        if (outputPath.Length > 0)
        {
            File.WriteAllText(outputPath, table);
            Console.WriteLine($"(written to {outputPath})");
        }

        return 0;
    }

    private static string Format(IReadOnlyList<VerdictTarget> targets, BenchmarkReport[] reports, string loadBefore, string loadAfter)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"Verdicts from one run, {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC, {Environment.ProcessorCount} processors; load average before {loadBefore}, after {loadAfter}.");
        text.AppendLine(CultureInfo.InvariantCulture, $"Quick in-process settings (4 warm-up, 5 iterations of 250 ms{(Environment.GetEnvironmentVariable("DOTNET_TC_CallCountingDelayMs") == "0" ? ", call counting from the first call" : "")}): ratios, not absolute times, are the figures.");
        text.AppendLine();
        text.AppendLine("| issue | target | figure 1 | figure 2 | ratio | wanted | verdict |");
        text.AppendLine("|---|---|---:|---:|---:|---:|---|");
        int met = 0, missed = 0, notRun = 0;
        foreach (VerdictTarget target in targets)
        {
            double? Mean(VerdictTerm term) => Find(reports, term, target.Parameters)?.ResultStatistics?.Mean;

            string figure1, figure2, ratioText;
            double? value;
            if (target.Relation == "bytes<=")
            {
                BenchmarkReport? report = Find(reports, target.Numerator.Terms[0], target.Parameters);
                long? bytes = report?.GcStats.GetBytesAllocatedPerOperation(report.BenchmarkCase);
                value = bytes;
                figure1 = bytes is null ? "not run" : $"{bytes} B";
                figure2 = "";
                ratioText = figure1;
            }
            else if (target.Relation == "ns<=")
            {
                value = target.Numerator.Evaluate(Mean);
                figure1 = Nanoseconds(value);
                figure2 = "";
                ratioText = figure1;
            }
            else
            {
                double? numerator = target.Numerator.Evaluate(Mean);
                double? denominator = target.Denominator!.Evaluate(Mean);
                bool product = target.Numerator.Join == '*';
                figure1 = product ? Product(numerator) : Nanoseconds(numerator);
                figure2 = product ? Product(denominator) : Nanoseconds(denominator);
                value = numerator is double n && denominator is double d && d > 0 ? n / d : null;
                ratioText = value is double r ? $"{r.ToString("0.00", CultureInfo.InvariantCulture)}×" : "—";
            }

            string wanted = target.Relation switch
            {
                "<=" => $"≤ {target.Threshold.ToString(CultureInfo.InvariantCulture)}×",
                ">=" => $"≥ {target.Threshold.ToString(CultureInfo.InvariantCulture)}×",
                "ns<=" => $"≤ {target.Threshold.ToString(CultureInfo.InvariantCulture)} ns",
                _ => $"≤ {target.Threshold.ToString(CultureInfo.InvariantCulture)} B",
            };
            string verdict;
            if (value is not double v)
            {
                verdict = "not run";
                notRun++;
            }
            else if (target.Relation == ">=" ? v >= target.Threshold : v <= target.Threshold)
            {
                verdict = "met";
                met++;
            }
            else
            {
                verdict = "**missed**";
                missed++;
            }

            text.AppendLine(CultureInfo.InvariantCulture, $"| {target.Section} | {target.Name} | {figure1} | {figure2} | {ratioText} | {wanted} | {verdict} |");
        }

        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"{met} met, {missed} missed, {notRun} not run (a benchmark the target names is missing or failed).");
        text.AppendLine("Figures are numerator and denominator as targets.tsv writes them: mean time per operation in ns (a product for ratios of ratios).");
        return text.ToString();
    }

    private static BenchmarkReport? Find(BenchmarkReport[] reports, VerdictTerm term, string parameters)
    {
        foreach (BenchmarkReport report in reports)
        {
            BenchmarkCase benchmark = report.BenchmarkCase;
            if (benchmark.Descriptor.Type.Name != term.Class || benchmark.Descriptor.WorkloadMethod.Name != term.Method)
            {
                continue;
            }

            if (MatchesParameters(benchmark, parameters) && report.Success)
            {
                return report;
            }
        }

        return null;
    }

    // "Size=64": every named parameter the case has must have that value; names the case does not
    // have are ignored (a term of another class without parameters).
    private static bool MatchesParameters(BenchmarkCase benchmark, string parameters)
    {
        if (parameters.Length == 0)
        {
            return true;
        }

        foreach (string pair in parameters.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            int equals = pair.IndexOf('=');
            string name = pair[..equals];
            string expected = pair[(equals + 1)..];
            foreach (var parameter in benchmark.Parameters.Items)
            {
                if (parameter.Name == name && Convert.ToString(parameter.Value, CultureInfo.InvariantCulture) != expected)
                {
                    return false;
                }
            }
        }

        return true;
    }

    private static string Nanoseconds(double? value) => value is double v ? $"{v.ToString(v < 100 ? "0.0" : "#,0", CultureInfo.InvariantCulture)} ns" : "not run";

    private static string Product(double? value) => value is double v ? v.ToString("#,0", CultureInfo.InvariantCulture) : "not run";

    private static string LoadAverage()
    {
        try
        {
            return string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3));
        }
        catch (IOException)
        {
            return "unknown";
        }
    }
}
