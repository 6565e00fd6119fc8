using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace AllocHosting;

/// <summary>The dashboard's page, script and style sheet (embedded resources) and its data endpoint.</summary>
internal static class AllocatorDashboardAssets
{
    public const string ScriptName = "dashboard.js";
    public const string StyleName = "dashboard.css";
    public const string DataName = "data";
    private const string BasePlaceholder = "%BASE%";

    // Everything the page needs comes from its own endpoints; nothing inline, nothing from elsewhere
    // (data: only for the empty icon, which keeps the browser from asking the app for /favicon.ico).
    private const string ContentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

    private static readonly string s_page = ReadResource("dashboard.html");
    private static readonly byte[] s_script = Encoding.UTF8.GetBytes(ReadResource(ScriptName));
    private static readonly byte[] s_style = Encoding.UTF8.GetBytes(ReadResource(StyleName));

    public static Task WritePageAsync(HttpContext context)
    {
        // The page's own path (with the app's path base), so that its links work under any prefix
        // and with or without a trailing slash.
        string path = (context.Request.PathBase + context.Request.Path).Value?.TrimEnd('/') ?? "";
        string page = s_page.Replace(BasePlaceholder, HtmlEncoder.Default.Encode(path), StringComparison.Ordinal);
        SetCommonHeaders(context.Response, "text/html; charset=utf-8");
        context.Response.Headers.ContentSecurityPolicy = ContentSecurityPolicy;
        context.Response.Headers["Referrer-Policy"] = "no-referrer";
        return context.Response.WriteAsync(page, Encoding.UTF8, context.RequestAborted);
    }

    public static Task WriteScriptAsync(HttpContext context) => WriteBytesAsync(context, s_script, "text/javascript; charset=utf-8");

    public static Task WriteStyleAsync(HttpContext context) => WriteBytesAsync(context, s_style, "text/css; charset=utf-8");

    public static async Task WriteDataAsync(HttpContext context, AllocatorDashboardSampler sampler)
    {
        SetCommonHeaders(context.Response, "application/json; charset=utf-8");
        await using (var writer = new Utf8JsonWriter(context.Response.BodyWriter))
        {
            sampler.WriteSnapshot(writer, DateTimeOffset.UtcNow);
        }

        await context.Response.BodyWriter.FlushAsync(context.RequestAborted);
    }

    private static Task WriteBytesAsync(HttpContext context, byte[] bytes, string contentType)
    {
        SetCommonHeaders(context.Response, contentType);
        context.Response.ContentLength = bytes.Length;
        return context.Response.Body.WriteAsync(bytes, context.RequestAborted).AsTask();
    }

    private static void SetCommonHeaders(HttpResponse response, string contentType)
    {
        response.ContentType = contentType;
        response.Headers.CacheControl = "no-store";
        response.Headers.XContentTypeOptions = "nosniff";
    }

    private static string ReadResource(string name)
    {
        string resource = "AllocHosting.Dashboard." + name;
        using Stream stream = typeof(AllocatorDashboardAssets).Assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"The embedded resource {resource} is missing from the AllocHosting assembly.");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }
}
