namespace AllocHosting.Allocators.Tests;

// The spin lock that an arena chunk shares with its context allocator and that guards a request
// arena's chain: mutual exclusion under contention, release on exceptions.
public class SharedSpinLockTests
{
    [Fact]
    public void Four_threads_incrementing_under_the_lock_lose_no_increment()
    {
        var spin = new SharedSpinLock();
        long plain = 0;   // a non-atomic read-modify-write: only mutual exclusion keeps it exact
        const int PerThread = 200_000;
        Thread[] threads = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
        {
            for (int i = 0; i < PerThread; i++)
            {
                using (spin.EnterScope())
                {
                    long value = plain;
                    if ((i & 1023) == 0)
                    {
                        Thread.Yield();   // a holder that loses its processor: the waiters must yield to it
                    }

                    plain = value + 1;
                }
            }
        })).ToArray();

        foreach (Thread thread in threads)
        {
            thread.Start();
        }

        foreach (Thread thread in threads)
        {
            Assert.True(thread.Join(TimeSpan.FromSeconds(60)));
        }

        Assert.Equal(4L * PerThread, plain);
        Assert.False(spin.IsHeld);
    }

    [Fact]
    public void A_scope_left_by_an_exception_releases_the_lock()
    {
        var spin = new SharedSpinLock();

        void ThrowInside()
        {
            using (spin.EnterScope())
            {
                Assert.True(spin.IsHeld);
                throw new InvalidOperationException("inside");
            }
        }

        Assert.Throws<InvalidOperationException>(ThrowInside);

        Assert.False(spin.IsHeld);
        spin.Enter();
        Assert.True(spin.IsHeld);
        spin.Exit();
        Assert.False(spin.IsHeld);
    }
}
