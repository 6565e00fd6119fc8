using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting;

[StructLayout(LayoutKind.Explicit, Size = 256)]
internal struct ProcessorSlot
{
    [FieldOffset(128)]
    public object? Value;
}
