namespace AllocHosting.Samples.WebApi;

/// <summary>The JSON body /webhook accepts: <c>{"id": "...", "type": "...", "items": [{"sku": "...", "quantity": 1, "price": 2.5}]}</c>.</summary>
internal sealed class WebhookEvent
{
    public string? Id { get; init; }

    public string? Type { get; init; }

    public List<WebhookItem>? Items { get; init; }
}
