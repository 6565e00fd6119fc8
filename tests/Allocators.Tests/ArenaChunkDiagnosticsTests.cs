using AllocHosting.Allocators.Interop;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// The chunk's diagnostics: a tracked use gives each rent a manager of its own, so that a stale use names the
/// very rent's site and tells the tracker; Protect and Unprotect call mprotect (through the system-call seam)
/// on the whole pages of the usable memory, and chunks that cannot be protected are skipped.
/// </summary>
public unsafe class ArenaChunkDiagnosticsTests
{
    private const int Size = 64 * 1024;

    [Theory]
    [InlineData(ArenaChunkKind.Bump)]
    [InlineData(ArenaChunkKind.BitSet)]
    public void A_tracked_use_names_the_site_of_each_rent_and_reports_every_stale_use(ArenaChunkKind kind)
    {
        using ArenaChunk chunk = Create(kind, NativeMemorySource.Shared);
        var tracker = new CountingTracker();
        chunk.Tracker = tracker;

        Assert.True(chunk.TryRent(100, 16, out Memory<byte> first));
        Assert.True(chunk.TryRent(3, out Memory<long> second));
        Assert.True(chunk.TryRent(0, 16, out Memory<byte> empty));
        first.Span.Fill(1);
        second.Span.Fill(-1);
        Assert.Equal(2, tracker.Captured);
        Assert.True(empty.IsEmpty);

        long highWater = chunk.Retire();
        Assert.True(highWater >= 124);
        Assert.Null(chunk.Tracker);

        var error = Assert.Throws<ObjectDisposedException>(() => first.Span.Length);
        Assert.Contains("It was rented by endpoint 'route' at site 1.", error.Message, StringComparison.Ordinal);
        error = Assert.Throws<ObjectDisposedException>(() => second[1..].Pin());
        Assert.Contains("at site 2.", error.Message, StringComparison.Ordinal);
        Assert.Throws<ObjectDisposedException>(() => second.Span.Length);
        Assert.Equal(["site 1", "site 2", "site 2"], tracker.Stale);
        Assert.False(chunk.IsPinned);

        // The next use is untracked: one manager again, and the plain message.
        chunk.ClearPending();
        Assert.True(chunk.TryRent(100, 16, out Memory<byte> untracked));
        Assert.False(untracked.Span.ContainsAnyExcept((byte)0));
        chunk.Retire();
        error = Assert.Throws<ObjectDisposedException>(() => untracked.Span.Length);
        Assert.DoesNotContain("rented by", error.Message, StringComparison.Ordinal);
        Assert.Equal(3, tracker.Stale.Count);
    }

    [Theory]
    [InlineData(ArenaChunkKind.Bump)]
    [InlineData(ArenaChunkKind.BitSet)]
    public void Tracked_rents_racing_with_the_end_of_their_use_never_keep_a_live_manager(ArenaChunkKind kind)
    {
        // Rounds: the window this once found (a rent that took the ended use's tracker with the next
        // use's count of ended uses) is a few instructions wide.
        for (int round = 0; round < Rounds; round++)
        {
            TrackedRentsRaceWithTheEndOfTheirUse(kind);
        }
    }

    private const int Rounds = 300;

    private static void TrackedRentsRaceWithTheEndOfTheirUse(ArenaChunkKind kind)
    {
        using ArenaChunk chunk = Create(kind, NativeMemorySource.Shared);
        var tracker = new CountingTracker();
        chunk.Tracker = tracker;
        var rented = new System.Collections.Concurrent.ConcurrentBag<Memory<byte>>();
        using var go = new ManualResetEventSlim();

        // Four renters (bounded: 200 rents each) while the owner ends the use after the first rents.
        Thread[] renters = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            go.Wait(TimeSpan.FromSeconds(5));
            for (int i = 0; i < 200 && chunk.TryRent(16, 16, out Memory<byte> memory); i++)
            {
                rented.Add(memory);
            }
        })).ToArray();
        foreach (Thread renter in renters)
        {
            renter.Start();
        }

        go.Set();
        SpinWait.SpinUntil(() => !rented.IsEmpty, TimeSpan.FromSeconds(5));
        chunk.Retire();
        foreach (Thread renter in renters)
        {
            Assert.True(renter.Join(TimeSpan.FromSeconds(10)));
        }

        // What is still live was rented after the end, from the next (untracked) use's one manager; every
        // other rent, racing or not, throws.
        Assert.True(chunk.TryRent(16, 16, out Memory<byte> probe));
        Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetMemoryManager<byte, System.Buffers.MemoryManager<byte>>(probe, out var nextUse));
        int stale = 0;
        foreach (Memory<byte> memory in rented)
        {
            Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetMemoryManager<byte, System.Buffers.MemoryManager<byte>>(memory, out var manager));
            if (ReferenceEquals(manager, nextUse))
            {
                Assert.Equal(16, memory.Span.Length);
                continue;
            }

            // Stale: a tracked rent names its site; a rent that began as the use ended (after the tracker was
            // cleared, before the next use's manager was in place) is a slice of the ended use's own manager
            // and throws the plain message (an arena refuses such a rent anyway, by its lease check).
            var error = Assert.Throws<ObjectDisposedException>(() => memory.Span.Length);
            stale += error.Message.Contains("It was rented by endpoint 'route' at site ", StringComparison.Ordinal) ? 1 : 0;
        }

        Assert.True(stale > 0);
    }

    [Theory]
    [InlineData(ArenaChunkKind.Bump)]
    [InlineData(ArenaChunkKind.BitSet)]
    public void Protect_and_Unprotect_call_mprotect_on_the_whole_pages_of_the_usable_memory(ArenaChunkKind kind)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var kernel = new FakeLinuxSystemCalls();
        using ArenaChunk chunk = Create(kind, new MemoryMapSource());
        chunk.Kernel = kernel;
        Assert.True(chunk.CanProtect);
        Assert.True(chunk.TryRent(100, 16, out Memory<byte> memory));
        nint start;
        using (System.Buffers.MemoryHandle pin = memory.Pin())
        {
            start = (nint)pin.Pointer;   // the first rent is at the start of the usable memory
        }

        chunk.Retire();
        Assert.True(chunk.Protect());
        Assert.True(chunk.IsProtected);
        Assert.True(chunk.Protect());   // already protected: no second call
        chunk.Unprotect();
        Assert.False(chunk.IsProtected);
        chunk.Unprotect();              // not protected: no call

        nuint page = (nuint)Environment.SystemPageSize;
        Assert.Equal(2, kernel.ProtectCalls.Count);
        (nint address, nuint length, int protection) = kernel.ProtectCalls[0];
        Assert.Equal(start, address);
        Assert.Equal(0u, (nuint)address % page);
        Assert.Equal(0u, length % page);
        Assert.InRange(length, page, (nuint)chunk.Capacity);
        Assert.Equal(LinuxConstants.PROT_NONE, protection);
        Assert.Equal((address, length, LinuxConstants.PROT_READ | LinuxConstants.PROT_WRITE), kernel.ProtectCalls[1]);

        chunk.ClearPending();
        Assert.True(chunk.TryRent(100, 16, out Memory<byte> next));
        Assert.False(next.Span.ContainsAnyExcept((byte)0));
    }

    [Fact]
    public void A_refused_mprotect_leaves_the_chunk_unprotected_and_a_refused_unprotect_throws()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var kernel = new FakeLinuxSystemCalls { Refuse = call => call == "mprotect" ? 12 : 0 };
        using ArenaChunk chunk = Create(ArenaChunkKind.Bump, new MemoryMapSource());
        chunk.Kernel = kernel;
        Assert.False(chunk.Protect());
        Assert.False(chunk.IsProtected);

        kernel.Refuse = null;
        Assert.True(chunk.Protect());
        kernel.Refuse = call => call == "mprotect" ? 12 : 0;
        var error = Assert.Throws<InvalidOperationException>(chunk.Unprotect);
        Assert.Contains("mprotect failed with ENOMEM", error.Message, StringComparison.Ordinal);
        Assert.True(chunk.IsProtected);

        // Disposal unprotects before the region goes back to its source.
        kernel.Refuse = null;
        chunk.Dispose();
        Assert.Equal(LinuxConstants.PROT_READ | LinuxConstants.PROT_WRITE, kernel.ProtectCalls[^1].Protection);
    }

    [Fact]
    public void A_chunk_of_the_portable_source_is_never_protected()
    {
        var kernel = new FakeLinuxSystemCalls();
        using ArenaChunk chunk = Create(ArenaChunkKind.Bump, NativeMemorySource.Shared);
        chunk.Kernel = kernel;
        chunk.Retire();

        Assert.False(chunk.CanProtect);
        Assert.False(chunk.Protect());
        Assert.False(chunk.IsProtected);
        Assert.Empty(kernel.ProtectCalls);
    }

    private static ArenaChunk Create(ArenaChunkKind kind, IMemorySource source) =>
        kind == ArenaChunkKind.Bump ? ArenaChunk.CreateBump(source, Size) : ArenaChunk.CreateBitSet(source, Size, 64);

    // Hands out "site 1", "site 2", ... and records the stale uses reported.
    private sealed class CountingTracker : ArenaRentTracker
    {
        public int Captured { get; private set; }

        public List<string> Stale { get; } = [];

        public override ArenaRentSite CaptureSite()
        {
            lock (Stale)
            {
                return new("route", $"site {++Captured}");
            }
        }

        public override void OnStaleUse(ArenaRentSite site)
        {
            lock (Stale)
            {
                Stale.Add(site.CallSite);
            }
        }
    }
}
