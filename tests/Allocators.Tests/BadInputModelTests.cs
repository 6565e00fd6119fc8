using AllocHosting.Allocators.Tests.Model;

namespace AllocHosting.Allocators.Tests;

/// <summary>
/// Issue 11, "Bad input, every allocator": the model-based test of every allocator of
/// <see cref="AllocatorFactories"/> with bad frees, grows and shrinks drawn among the ordinary steps
/// (wrong sizes, interior pointers, double frees, foreign pointers) and grows to impossible sizes.
/// The model proves that each is refused and changes nothing (see <see cref="AllocatorModel"/>).
/// </summary>
public class BadInputModelTests
{
    // The untracked NativeMemoryAllocator is left out: its remarks say it cannot know its blocks (Owns
    // is always false) and passes any pointer to the C runtime, where bad input is undefined behaviour.
    public static TheoryData<string> Allocators => AllocatorFactories.NamesExcept("native");

    [Theory]
    [MemberData(nameof(Allocators))]
    public void Bad_input_is_refused_and_changes_nothing(string kind)
    {
        ModelSettings settings = BadInputSettings.For(kind);
        long steps = AllocatorModel.Run(settings, () => AllocatorFactories.Create(kind));
        Assert.True(steps >= settings.Iterations, $"only {steps} steps ran");
    }
}
