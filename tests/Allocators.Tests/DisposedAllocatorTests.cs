namespace AllocHosting.Allocators.Tests;

/// <summary>Every member of a disposed allocator refuses with <see cref="ObjectDisposedException"/>: disposal is misuse, not exhaustion.</summary>
public unsafe class DisposedAllocatorTests
{
    // An untracked NativeMemoryAllocator (what Shared is) and a SwitchableAllocator own nothing and stay usable: see the test below.
    public static TheoryData<string> Allocators => AllocatorFactories.NamesExcept("native", "switchable");

    [Theory]
    [MemberData(nameof(Allocators))]
    public void Every_member_of_a_disposed_allocator_throws_ObjectDisposedException(string kind)
    {
        AllocatorBase allocator = AllocatorFactories.Create(kind);
        byte* block = allocator.Allocate(64, 16);
        allocator.Dispose();

        var refused = new List<string>();
        void Expect(string member, Action action)
        {
            Exception? error = Record.Exception(action);
            if (error is not ObjectDisposedException)
            {
                refused.Add($"{member}: {(error is null ? "no exception" : error.GetType().Name + ": " + error.Message)}");
            }
        }

        Expect("Allocate", () => allocator.Allocate(64, 16));
        Expect("TryAllocate", () => allocator.TryAllocate(64, 16, out _));
        Expect("AllocateZeroed", () => allocator.AllocateZeroed(64, 16));
        Expect("Deallocate", () => allocator.Deallocate(block, 64, 16));
        Expect("GrowingReallocate", () => allocator.GrowingReallocate(block, 64, 128, 16));
        Expect("TryGrowingReallocate", () => allocator.TryGrowingReallocate(block, 64, 128, 16, out _));
        Expect("ShrinkingReallocate", () => allocator.ShrinkingReallocate(block, 64, 32, 16));
        Expect("Reallocate (grow)", () => allocator.Reallocate(block, 64, 128, 16));
        Expect("Reallocate (shrink)", () => allocator.Reallocate(block, 64, 32, 16));
        Expect("Reallocate (to zero)", () => allocator.Reallocate(block, 64, 0, 16));
        Expect("TryGrowInPlace", () => allocator.TryGrowInPlace(block, 64, 128, 16));
        Expect("TryShrinkInPlace", () => allocator.TryShrinkInPlace(block, 64, 32, 16));
        switch (allocator)
        {
            case BumpAllocator bump:
                Expect("Reset", bump.Reset);
                Expect("Reset(clear)", () => bump.Reset(clear: true));
                Expect("TryAllocateConcurrent", () => bump.TryAllocateConcurrent(64, 16, out _));
                break;
            case BitSetAllocator bitSet:
                Expect("Reset", bitSet.Reset);
                break;
            case MultipleBinarySearchTreeAllocator tree:
                Expect("Reset", tree.Reset);
                break;
            case ContextAllocator context:
                Expect("Reset", context.Reset);
                break;
        }

        // Owns may answer false instead; it must never claim the memory.
        Exception? ownsError = Record.Exception(() => Assert.False(allocator.Owns(block)));
        if (ownsError is not null and not ObjectDisposedException)
        {
            refused.Add("Owns: " + ownsError.Message);
        }

        allocator.Dispose();   // a second Dispose does nothing
        Assert.True(refused.Count == 0, kind + ":\n" + string.Join("\n", refused));
    }

    [Theory]
    [InlineData("native")]
    [InlineData("switchable")]
    public void Allocators_that_own_nothing_stay_usable_after_Dispose(string kind)
    {
        AllocatorBase allocator = AllocatorFactories.Create(kind);
        byte* block = allocator.Allocate(64, 16);
        allocator.Dispose();
        block = allocator.GrowingReallocate(block, 64, 128, 16);
        allocator.Deallocate(block, 128, 16);
        Assert.True(allocator.TryAllocate(32, 16, out block));
        allocator.Deallocate(block, 32, 16);
        NativeMemoryAllocator.Shared.Dispose();
        block = NativeMemoryAllocator.Shared.Allocate(8, 8);
        NativeMemoryAllocator.Shared.Deallocate(block, 8, 8);
    }
}
