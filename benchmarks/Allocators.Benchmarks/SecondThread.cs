namespace AllocHosting.Allocators.Benchmarks;

/// <summary>A worker thread that runs one action while the caller runs the same action.</summary>
internal sealed class SecondThread : IDisposable
{
    private readonly Thread _thread;
    private readonly SemaphoreSlim _start = new(0);
    private readonly SemaphoreSlim _done = new(0);
    private Action? _work;
    private volatile bool _stopping;

    public SecondThread()
    {
        _thread = new Thread(Run) { IsBackground = true, Name = "benchmark second thread" };
        _thread.Start();
    }

    public void RunWith(Action work)
    {
        _work = work;
        _start.Release();
        work();
        _done.Wait();
    }

    public void Dispose()
    {
        _stopping = true;
        _start.Release();
        _thread.Join();
        _start.Dispose();
        _done.Dispose();
    }

    private void Run()
    {
        while (true)
        {
            _start.Wait();
            if (_stopping)
            {
                return;
            }

            _work!();
            _done.Release();
        }
    }
}
