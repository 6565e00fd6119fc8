using System.Collections.Concurrent;
using System.Diagnostics;

namespace AllocHosting.Tests;

/// <summary>A process a test starts and always ends: its output is kept (the last lines) for failure messages, and disposing kills it with its children.</summary>
internal sealed class ChildProcess : IDisposable
{
    private const int KeptLines = 200;
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _output = new();

    private ChildProcess(Process process) => _process = process;

    public string Name => _process.StartInfo.FileName;

    public bool HasExited => _process.HasExited;

    /// <summary>The last lines the process wrote to stdout and stderr.</summary>
    public string Output => string.Join(Environment.NewLine, _output);

    public static ChildProcess Start(string fileName, IEnumerable<string> arguments, string? workingDirectory = null)
    {
        var info = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (string argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        var process = new Process { StartInfo = info };
        var child = new ChildProcess(process);
        process.OutputDataReceived += (_, e) => child.Keep(e.Data);
        process.ErrorDataReceived += (_, e) => child.Keep(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }

        _output.Enqueue(line);
        while (_output.Count > KeptLines && _output.TryDequeue(out _))
        {
        }
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(5000);
            }
        }
        catch (InvalidOperationException)
        {
            // It ended between the check and the kill.
        }
        finally
        {
            _process.Dispose();
        }
    }
}
