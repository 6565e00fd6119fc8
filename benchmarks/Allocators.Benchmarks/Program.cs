using AllocHosting.Allocators.Benchmarks.Peers;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;

// Every benchmark runs in a child process started with the glibc tunable jemalloc needs to
// be loaded after start-up (performance.md). Ratios to the baseline (ArrayPool.Shared) are the
// figures to quote; absolute times drift between runs on shared machines.
var config = DefaultConfig.Instance
    .AddJob(Job.Default
        .WithWarmupCount(3)
        .WithIterationCount(10)
        .WithEnvironmentVariable("GLIBC_TUNABLES", NativePeers.JemallocTunable))
    .AddColumn(StatisticColumn.Median)
    .WithSummaryStyle(BenchmarkDotNet.Reports.SummaryStyle.Default.WithRatioStyle(RatioStyle.Trend));

BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);
