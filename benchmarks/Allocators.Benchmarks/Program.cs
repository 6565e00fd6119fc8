using AllocHosting.Allocators.Benchmarks;
using AllocHosting.Allocators.Benchmarks.Peers;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;

// Every benchmark runs in a child process started with the glibc tunable jemalloc needs to
// be loaded after start-up (performance.md). Ratios to the baseline (ArrayPool.Shared) are the
// figures to quote; absolute times drift between runs on shared machines.
// A job named on the command line (`--job short` for a quick first run) replaces the default one
// rather than running beside it; run.sh exports the tunable to every child process anyway.
if (args.Length >= 2 && args[0] == "--verdicts")
{
    // benchmarks/verdicts.sh: --verdicts targets.tsv [--out table.md] [more BenchmarkDotNet arguments]
    string output = args.Length >= 4 && args[2] == "--out" ? args[3] : "";
    return AllocHosting.Allocators.Benchmarks.Verdicts.VerdictRun.Run(args[1], output, args[(output.Length > 0 ? 4 : 2)..]);
}

// Issue 14's long fragmenting workload is timed per operation outside BenchmarkDotNet.
if (args is ["--btree-fragmentation", ..])
{
    return BTreeFragmentationHarness.Run(args);
}

// One method in a plain loop, for a profiler (LoopHarness).
if (args is ["--loop", ..])
{
    return LoopHarness.Run(args);
}

bool jobGiven = args.Any(arg => arg is "--job" or "-j");
IConfig config = DefaultConfig.Instance
    .AddColumn(StatisticColumn.Median)
    .WithSummaryStyle(BenchmarkDotNet.Reports.SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend));
if (!jobGiven)
{
    config = config.AddJob(Job.Default
        .WithWarmupCount(3)
        .WithIterationCount(10)
        .WithEnvironmentVariable("GLIBC_TUNABLES", NativePeers.JemallocTunable));
}

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
return 0;
