using Microsoft.AspNetCore.Http.Features;

namespace AllocHosting.Tests;

/// <summary>A request's maximum body size, as a server's <see cref="IHttpMaxRequestBodySizeFeature"/> gives it, for tests outside Kestrel.</summary>
internal sealed class TestBodySizeLimit : IHttpMaxRequestBodySizeFeature
{
    public bool IsReadOnly => false;

    public long? MaxRequestBodySize { get; set; }
}
