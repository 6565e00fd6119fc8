namespace AllocHosting.Allocators;

/// <summary>
/// Gives an async flow its context allocator when the flow first needs one, instead of when it is
/// installed: <see cref="SwitchableAllocator.UseContext(IContextAllocatorSource)"/>. A request arena,
/// for example, takes memory only when its request first allocates.
/// </summary>
/// <example>
/// <code>
/// sealed class LazyBump : IContextAllocatorSource
/// {
///     private readonly Lazy&lt;ContextAllocator&gt; _context = new(() =&gt;
///         ContextAllocator.ShortLived(new BumpAllocator(NativeMemorySource.Shared, 64 * 1024), threadSafe: true));
///     public ContextAllocator GetContextAllocator() =&gt; _context.Value;
/// }
///
/// using (switchable.UseContext(new LazyBump()))   // nothing is allocated yet
/// {
///     byte* block = switchable.Allocate(256, 8);  // the bump allocator is created here
/// }
/// </code>
/// </example>
public interface IContextAllocatorSource
{
    /// <summary>
    /// The context allocator that serves the flow now. The switchable allocator calls it on every
    /// allocation, and usable-size query, that a flow installed with this source makes in
    /// <see cref="AllocatorKind.Context"/> mode, possibly from several threads at once: it must be
    /// thread-safe, and cheap once the allocator exists. It may return another allocator later (see
    /// <see cref="GetContextAllocatorAfter"/>); each is registered in the owner registry at its first
    /// use, so every block is freed into the allocator that handed it out. An allocation asks again
    /// once its block is carved and fails with whatever that second call throws, so a source that ends
    /// while an allocation runs (a request ending on another thread) never lets its block out.
    /// </summary>
    /// <returns>The context allocator; never null. Use a thread-safe form (<see cref="ContextAllocator.IsThreadSafe"/>) when the flow may fan out.</returns>
    /// <exception cref="InvalidOperationException">The source has ended (for example its request is over). Whatever the source throws fails the allocation with it.</exception>
    ContextAllocator GetContextAllocator();

    /// <summary>
    /// Called when <paramref name="exhausted"/>, an allocator this source gave, could not serve a
    /// request of <paramref name="size"/> bytes: returns another context allocator to try once (a
    /// fresh arena chunk, say), or <see langword="null"/> to let the allocation fail. By default,
    /// <see langword="null"/>.
    /// </summary>
    /// <param name="exhausted">The context allocator that returned no memory.</param>
    /// <param name="size">The bytes requested.</param>
    /// <param name="alignment">The alignment requested.</param>
    /// <returns>The allocator to try instead, or <see langword="null"/>.</returns>
    ContextAllocator? GetContextAllocatorAfter(ContextAllocator exhausted, nuint size, nuint alignment) => null;
}
