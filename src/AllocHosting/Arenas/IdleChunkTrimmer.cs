using Microsoft.Extensions.Logging;

namespace AllocHosting;

/// <summary>
/// Gives idle arena memory back: every <c>IdleTrimInterval</c> the chunks of an
/// <see cref="ArenaChunkBudget"/> that stayed idle through the whole interval (the low-water mark
/// of its idle stack) are disposed, coldest first, and segments left empty go back to the
/// operating system.
/// </summary>
/// <remarks>
/// Threads: the timer trims on a thread pool thread; two trims overlap only if one outlasts the
/// interval, and then the budget's lock runs them one after the other (the later finds less to
/// trim). <see cref="Dispose"/> runs once, at shutdown, after the budget's (a trim that still
/// runs then finds the budget disposed and does nothing).
/// </remarks>
internal sealed class IdleChunkTrimmer : IDisposable
{
    private readonly ArenaChunkBudget _budget;
    private readonly ILogger _logger;
    private readonly ITimer _timer;

    public IdleChunkTrimmer(ArenaChunkBudget budget, TimeSpan interval, TimeProvider timeProvider, ILogger logger)
    {
        _budget = budget;
        _logger = logger;
        _timer = timeProvider.CreateTimer(static state => ((IdleChunkTrimmer)state!).Trim(), this, interval, interval);
    }

    // Disposes the chunks idle through the whole interval since the last trim and gives empty segments back.
    private void Trim()
    {
        if (_budget.TrimIdle(out int trimmedChunks, out int trimmedSegments, out int remaining) && trimmedChunks + trimmedSegments > 0)
        {
            _logger.ArenaChunksTrimmed(trimmedChunks, trimmedSegments, remaining);
        }
    }

    public void Dispose() => _timer.Dispose();
}
