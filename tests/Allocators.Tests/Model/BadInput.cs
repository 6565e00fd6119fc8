namespace AllocHosting.Allocators.Tests.Model;

/// <summary>
/// The kinds of bad input a model-based test passes to an allocator: each must be refused with an
/// <see cref="ArgumentException"/> that changes nothing (see <see cref="AllocatorModel"/>). A flags
/// type, so that <see cref="ModelSettings.RefusedBadInputs"/> names the kinds an allocator refuses;
/// the kinds it documents as tolerated are left out there, with a comment citing the document.
/// </summary>
[Flags]
public enum BadInput
{
    None = 0,

    /// <summary>A live block with a size larger than any the allocator may have given it (beyond its usable size).</summary>
    LargerSize = 1 << 0,

    /// <summary>A live block with a size smaller than the one it was allocated (or last resized) with.</summary>
    SmallerSize = 1 << 1,

    /// <summary>A live block with another alignment than the one it was allocated with.</summary>
    WrongAlignment = 1 << 2,

    /// <summary>An address inside a live block, not its start.</summary>
    InteriorPointer = 1 << 3,

    /// <summary>A block freed earlier (or left behind by a moving reallocation) that no live block overlaps: a double free.</summary>
    FreedPointer = 1 << 4,

    /// <summary>Memory the allocator never handed out (a buffer of the test's own).</summary>
    ForeignPointer = 1 << 5,

    /// <summary>Every kind.</summary>
    All = LargerSize | SmallerSize | WrongAlignment | InteriorPointer | FreedPointer | ForeignPointer,
}
