namespace AllocHosting.Samples.WebApi;

/// <summary>What /webhook answers: the event's id and type, its item count, total quantity and amount, the body's length and whether it was signed.</summary>
internal sealed class WebhookSummary
{
    public string? Id { get; init; }

    public string? Type { get; init; }

    public int Items { get; init; }

    public long Quantity { get; init; }

    public decimal Total { get; init; }

    public long Bytes { get; init; }

    public bool Signed { get; init; }
}
