using System.Text.Json.Serialization;

namespace AllocHosting.Samples.WebApi;

/// <summary>Source-generated JSON metadata for the webhook endpoints (trimming- and AOT-safe; camelCase names).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(WebhookEvent))]
[JsonSerializable(typeof(WebhookSummary))]
internal sealed partial class WebhookJsonContext : JsonSerializerContext;
