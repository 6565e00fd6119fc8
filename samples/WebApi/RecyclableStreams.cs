using Microsoft.IO;

namespace AllocHosting.Samples.WebApi;

/// <summary>
/// The one <see cref="RecyclableMemoryStreamManager"/> of the sample's <c>/…/recyclable</c> twins, set up as a
/// careful user would: default block (128 KiB) and large-buffer (1 MiB) sizes, the free pools capped so that a
/// burst does not keep its memory for ever, and buffers zeroed on return, like the request arena clears what a
/// request used (<c>ClearPolicy = ClearUsed</c>) and the ArrayPool twins return with <c>clearArray</c>.
/// </summary>
internal static class RecyclableStreams
{
    /// <summary>Shared by every request (the manager is thread-safe).</summary>
    public static RecyclableMemoryStreamManager Manager { get; } = new(new RecyclableMemoryStreamManager.Options
    {
        MaximumSmallPoolFreeBytes = 16 * 1024 * 1024,
        MaximumLargePoolFreeBytes = 16 * 1024 * 1024,
        ZeroOutBuffer = true,
    });
}
