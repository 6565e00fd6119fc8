namespace AllocHosting.Samples.WebApi;

/// <summary>One line of a sample webhook event: a SKU, how many, and the unit price.</summary>
internal sealed class WebhookItem
{
    public string? Sku { get; init; }

    public int Quantity { get; init; }

    public decimal Price { get; init; }
}
