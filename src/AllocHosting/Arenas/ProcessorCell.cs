using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace AllocHosting;

[StructLayout(LayoutKind.Explicit, Size = 256)]
internal struct ProcessorCell
{
    [FieldOffset(128)]
    public long Value;
}
