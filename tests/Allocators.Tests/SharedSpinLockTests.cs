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

#if DEBUG
    // Debug builds only (the tests'): a section that takes the lock again on its own thread throws
    // instead of spinning for ever, and the lock stays usable.
    [Fact]
    public void Taking_the_lock_again_on_the_thread_that_holds_it_throws_in_debug_builds()
    {
        var spin = new SharedSpinLock();

        void Reenter()
        {
            using (spin.EnterScope())
            {
                using (spin.EnterScope())
                {
                }
            }
        }

        Assert.Throws<LockRecursionException>(Reenter);
        Assert.False(spin.IsHeld);

        // Another thread may take it while this one holds it no more; and this one again after it.
        var other = new Thread(() =>
        {
            spin.Enter();
            spin.Exit();
        });
        other.Start();
        Assert.True(other.Join(TimeSpan.FromSeconds(10)));
        spin.Enter();
        spin.Exit();
        Assert.False(spin.IsHeld);
    }
#endif
}
