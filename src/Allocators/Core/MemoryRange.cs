namespace AllocHosting.Allocators;

/// <summary>A half-open address range <c>[From, To)</c>.</summary>
/// <param name="From">The first address in the range.</param>
/// <param name="To">The first address after the range.</param>
public readonly record struct MemoryRange(nuint From, nuint To)
{
    /// <summary>The number of bytes in the range.</summary>
    public nuint Length => To - From;

    /// <summary>Whether <paramref name="address"/> lies in <c>[From, To)</c>.</summary>
    public bool Contains(nuint address) => address >= From && address < To;

    /// <summary>Whether the whole block <c>[address, address + length)</c> lies in the range.</summary>
    public bool Contains(nuint address, nuint length) =>
        address >= From && address <= To && length <= To - address;
}
