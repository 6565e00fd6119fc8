namespace AllocHosting;

/// <summary>Records whether <c>UseRequestArena()</c> placed the middleware, so the start-up filter adds none (never twice).</summary>
internal sealed class RequestArenaPlacement
{
    public bool PlacedExplicitly { get; private set; }

    public void MarkPlaced()
    {
        if (PlacedExplicitly)
        {
            throw new InvalidOperationException("UseRequestArena() was called twice: the request-arena middleware must run once per request.");
        }

        PlacedExplicitly = true;
    }
}
