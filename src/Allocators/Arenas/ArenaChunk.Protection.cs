using System.Runtime.InteropServices;
using AllocHosting.Allocators.Interop;
using AllocHosting.Allocators.MemorySources;

namespace AllocHosting.Allocators;

/// <summary>Guard: taking away all access to the pages of a released chunk while it waits before reuse.</summary>
public sealed unsafe partial class ArenaChunk
{
    // Whether the usable pages are inaccessible now (the owner's thread only, as Retire and ClearPending).
    private bool _protected;

    /// <summary>The system calls Protect and Unprotect make (tests substitute a stand-in that records them).</summary>
    internal ILinuxSystemCalls Kernel { get; set; } = LinuxSystemCalls.Kernel;

    /// <summary>
    /// Whether <see cref="Protect"/> can take away access to the chunk's memory: on Linux, for a chunk
    /// whose usable memory spans at least one whole page and does not come from
    /// <see cref="NativeMemorySource"/> (whose memory is the C heap's: a portable source, never protected).
    /// </summary>
    public bool CanProtect => OperatingSystem.IsLinux() && _source is not NativeMemorySource && ProtectedPages(out _, out _);

    /// <summary>Whether the chunk's pages are inaccessible now (<see cref="Protect"/> ran and <see cref="Unprotect"/> did not yet).</summary>
    public bool IsProtected => _protected;

    /// <summary>
    /// Makes the whole pages of the usable memory inaccessible (<c>mprotect(PROT_NONE)</c>), so that any
    /// read or write through a <see cref="Span{T}"/> or pointer kept from an ended use crashes the
    /// process (SIGSEGV) instead of passing unseen. For a retired chunk waiting before reuse, in
    /// development only: a crash is the intended outcome of a late access. The partial pages at either
    /// end of the usable memory (if its bounds are not page-aligned) stay accessible.
    /// </summary>
    /// <returns><see langword="true"/> when the pages are protected now; <see langword="false"/> when the chunk cannot be protected (<see cref="CanProtect"/>) or the kernel refused (nothing changed).</returns>
    /// <exception cref="ObjectDisposedException">The chunk was disposed.</exception>
    /// <remarks>Must not run while rents of the chunk are in flight; the chunk must be unprotected (<see cref="Unprotect"/>) before its next use or its clearing.</remarks>
    public bool Protect()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_protected)
        {
            return true;
        }

        if (!CanProtect || !ProtectedPages(out nint start, out nuint length))
        {
            return false;
        }

        if (Kernel.Protect(start, length, LinuxConstants.PROT_NONE) != 0)
        {
            return false;
        }

        _protected = true;
        return true;
    }

    /// <summary>Makes the pages <see cref="Protect"/> protected readable and writable again; does nothing when they are not protected.</summary>
    /// <exception cref="InvalidOperationException">The kernel refused (the chunk stays protected and must not be used).</exception>
    public void Unprotect()
    {
        if (!_protected)
        {
            return;
        }

        ProtectedPages(out nint start, out nuint length);
        if (Kernel.Protect(start, length, LinuxConstants.PROT_READ | LinuxConstants.PROT_WRITE) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new InvalidOperationException($"The pages of a guarded arena chunk could not be made accessible again: {LinuxErrors.Describe("mprotect", errno)}.");
        }

        _protected = false;
    }

    // The whole pages inside the usable memory (the bit set of a bit set chunk, after the blocks, stays accessible).
    private bool ProtectedPages(out nint start, out nuint length)
    {
        nuint page = (nuint)Environment.SystemPageSize;
        nuint from = Allocator.AlignUp((nuint)_usable, page);
        nuint to = ((nuint)_usable + (nuint)_capacity) & ~(page - 1);
        start = (nint)from;
        length = to > from ? to - from : 0;
        return length != 0;
    }
}
