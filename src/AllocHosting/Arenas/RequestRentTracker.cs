using System.Diagnostics;
using AllocHosting.Allocators;
using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>
/// The diagnostics tracker of one request (or arena scope), set on each chunk the request takes
/// (<see cref="ArenaChunk.Tracker"/>) under option <c>Diagnostics</c> Track or Guard: each rent records
/// the request's route (read from the endpoint once, at the first rent) and its call site, the first
/// frame of the caller's code on a captured stack.
/// </summary>
/// <remarks>
/// The call site: the first frame outside AllocHosting and outside the framework (System.*,
/// Microsoft.*), else the first frame outside AllocHosting (a serializer writing to request memory,
/// for example, when the caller's own frame is not on the stack). Costs a stack capture per rent
/// (microseconds; file and line only when symbols are present). Threads: rents of the request may
/// capture at once; the route is computed at most a few times (idempotent). Outlives its request
/// (the memory it tracked refers to it) but keeps no reference to the request's context once the
/// route is known.
/// </remarks>
internal sealed class RequestRentTracker : ArenaRentTracker
{
    private static readonly string HostingAssembly = typeof(RequestRentTracker).Assembly.GetName().Name!;
    private static readonly string AllocatorsAssembly = typeof(ArenaChunk).Assembly.GetName().Name!;

    private readonly StaleUseReporter _reporter;
    private HttpContext? _context;
    private string? _route;

    public RequestRentTracker(StaleUseReporter reporter, HttpContext? context)
    {
        _reporter = reporter;
        _context = context;
    }

    /// <inheritdoc />
    public override ArenaRentSite CaptureSite()
    {
        string? route = Volatile.Read(ref _route);
        if (route is null)
        {
            route = StaleUseReporter.RouteOf(_context);
            Volatile.Write(ref _route, route);
            _context = null;
        }

        return _reporter.Site(route, CaptureCallSite());
    }

    /// <inheritdoc />
    public override void OnStaleUse(ArenaRentSite site) => _reporter.Report(site);

    /// <summary>The caller's frame on the current stack, described as <c>Namespace.Type.Method in File.cs:line N</c>.</summary>
    internal static string CaptureCallSite()
    {
        var trace = new StackTrace(1, fNeedFileInfo: true);
        StackFrame? fallback = null;
        DiagnosticMethodInfo? fallbackMethod = null;
        foreach (StackFrame frame in trace.GetFrames())
        {
            DiagnosticMethodInfo? method = DiagnosticMethodInfo.Create(frame);
            string? assembly = method?.DeclaringAssemblyName;
            if (method is null || assembly is null || IsAllocHosting(assembly))
            {
                continue;
            }

            if (fallback is null)
            {
                fallback = frame;
                fallbackMethod = method;
            }

            // A method without a declaring type is a dynamic one (the request delegate ASP.NET Core
            // compiles for a minimal API handler, into which an optimised build may have inlined the
            // handler): a fallback only.
            if (!IsFramework(assembly) && method.DeclaringTypeName is not null)
            {
                return Describe(frame, method);
            }
        }

        return fallback is null ? "an unknown call site" : Describe(fallback, fallbackMethod!);
    }

    private static bool IsAllocHosting(string assembly) =>
        assembly.StartsWith(HostingAssembly + ",", StringComparison.Ordinal) || assembly.StartsWith(AllocatorsAssembly + ",", StringComparison.Ordinal)
        || assembly == HostingAssembly || assembly == AllocatorsAssembly;

    private static bool IsFramework(string assembly) =>
        assembly.StartsWith("System", StringComparison.Ordinal) || assembly.StartsWith("Microsoft.", StringComparison.Ordinal)
        || assembly.StartsWith("netstandard", StringComparison.Ordinal);

    private static string Describe(StackFrame frame, DiagnosticMethodInfo method)
    {
        if (method.DeclaringTypeName is null)
        {
            return $"the endpoint's compiled request delegate {method.Name} (the handler was inlined into it; a Debug build names it)";
        }

        string type = method.DeclaringTypeName;
        string name = method.Name;

        // An async method or iterator runs as MoveNext of a compiler-generated <Name>d__N nested in its type.
        int nested = type.LastIndexOf('+');
        if (nested > 0 && type.Length > nested + 1 && type[nested + 1] == '<')
        {
            int end = type.IndexOf('>', nested);
            if (end > nested + 2)
            {
                name = type[(nested + 2)..end];
            }

            type = type[..nested];
        }

        // A lambda: <Outer>b__0_1.
        if (name.StartsWith('<') && name.IndexOf('>') is > 1 and int close)
        {
            name = $"{name[1..close]} (lambda)";
        }

        string where = $"{type.Replace('+', '.')}.{name}";
        string? file = frame.GetFileName();
        return file is null ? where : $"{where} in {Path.GetFileName(file)}:line {frame.GetFileLineNumber()}";
    }
}
