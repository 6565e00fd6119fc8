using System.Diagnostics.CodeAnalysis;

namespace AllocHosting.Allocators;

/// <summary>
/// What a <see cref="LiveBlockTable{TBlock}"/> keeps for one block: enough to check that a call
/// naming the block passes a size and alignment that fit it. Implemented by small structs, so the
/// table's checks are specialised per block type and not dispatched through the interface.
/// </summary>
internal unsafe interface ILiveBlock
{
    /// <summary>Whether a call that passes <paramref name="size"/> and <paramref name="alignment"/> for this block describes it.</summary>
    bool Fits(nuint size, nuint alignment);

    /// <summary>Throws the <see cref="ArgumentException"/> for a call whose size or alignment does not fit (see <see cref="Fits"/>).</summary>
    [DoesNotReturn]
    void ThrowMismatch(void* pointer, nuint size, nuint alignment);
}
