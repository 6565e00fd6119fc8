namespace AllocHosting;

/// <summary>The activator when <see cref="SwitchableAllocatorOptions.InstallContextAllocator"/> is off: installs nothing, so requests that never rent take no chunk.</summary>
internal sealed class NoRequestArenaActivator : IRequestArenaActivator
{
    public IDisposable? Activate(RequestArena arena) => null;
}
