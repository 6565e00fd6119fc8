using System.Runtime.CompilerServices;

namespace AllocHosting.Allocators;

/// <summary>The page each size class of a heap allocates from, inline in the heap object (one load fewer than an array).</summary>
[InlineArray(SlabSizeClasses.Count)]
internal struct PageTable
{
    private SlabPage _first;
}
