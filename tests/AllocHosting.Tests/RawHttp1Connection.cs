using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AllocHosting.Tests;

/// <summary>
/// One HTTP/1.1 connection on a raw socket to 127.0.0.1, for what HttpClient will not send: bodies shorter or
/// longer than their <c>Content-Length</c>, a half-close, a stall, a reset. Every read is bounded in time.
/// </summary>
internal sealed class RawHttp1Connection : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly TcpClient _client;
    private readonly NetworkStream _stream;
    private readonly List<byte> _received = [];
    private bool _ended;

    private RawHttp1Connection(TcpClient client)
    {
        _client = client;
        _stream = client.GetStream();
    }

    public static async Task<RawHttp1Connection> OpenAsync(int port)
    {
        var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, port);
        client.NoDelay = true;
        return new RawHttp1Connection(client);
    }

    /// <summary>The head of a POST with the given Content-Length (and any extra header lines, each ending in CRLF).</summary>
    public static byte[] PostHead(string path, long contentLength, string extraHeaders = "") =>
        Encoding.ASCII.GetBytes($"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {contentLength}\r\n{extraHeaders}\r\n");

    /// <summary>The head of a GET.</summary>
    public static byte[] GetHead(string path) => Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

    public async Task SendAsync(params byte[][] parts)
    {
        foreach (byte[] part in parts)
        {
            await _stream.WriteAsync(part);
        }

        await _stream.FlushAsync();
    }

    /// <summary>Sends a FIN: the client will send nothing more but still reads.</summary>
    public void CloseSend() => _client.Client.Shutdown(SocketShutdown.Send);

    /// <summary>Closes with a reset (linger 0), as a client that goes away.</summary>
    public void Reset()
    {
        _client.Client.LingerState = new LingerOption(true, 0);
        _client.Dispose();
    }

    /// <summary>Reads the next response: its status, headers (names lower-cased) and body (none for an interim 1xx response; else by Content-Length, chunks, or to the end); null if the server closed first.</summary>
    public async Task<(int Status, Dictionary<string, string> Headers, byte[] Body)?> ReadResponseAsync()
    {
        using var timeout = new CancellationTokenSource(Timeout);
        int headEnd;
        while ((headEnd = IndexOf("\r\n\r\n"u8)) < 0)
        {
            if (!await FillAsync(timeout.Token))
            {
                return null;
            }
        }

        string[] lines = Encoding.ASCII.GetString(Take(headEnd + 4)).Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
        int status = int.Parse(lines[0].Split(' ')[1], CultureInfo.InvariantCulture);
        var headers = lines.Skip(1).Select(l => l.Split(':', 2)).ToDictionary(p => p[0].Trim().ToLowerInvariant(), p => p[1].Trim());
        byte[] body;
        if (status is >= 100 and < 200)
        {
            body = [];   // an interim response (100 Continue) has no body
        }
        else if (headers.TryGetValue("content-length", out string? length))
        {
            body = await TakeAsync(int.Parse(length, CultureInfo.InvariantCulture), timeout.Token);
        }
        else if (headers.TryGetValue("transfer-encoding", out string? encoding) && encoding.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            var chunks = new List<byte>();
            while (true)
            {
                int lineEnd;
                while ((lineEnd = IndexOf("\r\n"u8)) < 0)
                {
                    await FillOrThrowAsync(timeout.Token);
                }

                int size = int.Parse(Encoding.ASCII.GetString(Take(lineEnd + 2)).Trim().Split(';')[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                chunks.AddRange(await TakeAsync(size + 2, timeout.Token));
                chunks.RemoveRange(chunks.Count - 2, 2);
                if (size == 0)
                {
                    break;
                }
            }

            body = [.. chunks];
        }
        else
        {
            while (await FillAsync(timeout.Token))
            {
            }

            body = Take(_received.Count);
        }

        return (status, headers, body);
    }

    /// <summary>Waits (bounded) until the server closed the connection, by a FIN or a reset; throws on the time-out.</summary>
    public async Task ServerClosedAsync()
    {
        using var timeout = new CancellationTokenSource(Timeout);
        while (await FillAsync(timeout.Token))
        {
        }
    }

    public void Dispose() => _client.Dispose();

    private async Task<bool> FillAsync(CancellationToken cancellationToken)
    {
        if (_ended)
        {
            return false;
        }

        byte[] buffer = new byte[16 * 1024];
        int read;
        try
        {
            read = await _stream.ReadAsync(buffer, cancellationToken);
        }
        catch (IOException)
        {
            read = 0;   // the server reset the connection: it is closed as much as by a FIN
        }

        _received.AddRange(buffer.AsSpan(0, read));
        _ended = read == 0;
        return read > 0;
    }

    private async Task FillOrThrowAsync(CancellationToken cancellationToken)
    {
        if (!await FillAsync(cancellationToken))
        {
            throw new IOException("The server closed the connection in the middle of a response.");
        }
    }

    private async Task<byte[]> TakeAsync(int count, CancellationToken cancellationToken)
    {
        while (_received.Count < count)
        {
            await FillOrThrowAsync(cancellationToken);
        }

        return Take(count);
    }

    private byte[] Take(int count)
    {
        byte[] taken = [.. _received.GetRange(0, count)];
        _received.RemoveRange(0, count);
        return taken;
    }

    private int IndexOf(ReadOnlySpan<byte> value) => System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_received).IndexOf(value);
}
