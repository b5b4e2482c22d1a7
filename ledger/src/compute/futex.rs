//! Sleeping on a cell's wake word (`WAKE_SEQ`) until a deadline or a wake-up, and waking
//! its sleepers: the waiting half of the budget protocol, shared by every process of a
//! container.
//!
//! The word lives in a `MAP_SHARED` file mapping, so the futex is a shared (not
//! `FUTEX_PRIVATE_FLAG`) one: a thread of any process of the container can wake it. The wait
//! uses `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` deadline, so a wake-up that comes
//! early and a wait that is retried never stretch the total wait. The default timer slack of a
//! thread (50 µs) would add up to that much to every timed wake-up, so the waiting thread lowers
//! its own slack to 1 µs for the wait and puts the caller's value back afterwards.

use std::sync::atomic::AtomicU64;

/// Timer slack used while a launch waits for budget.
const WAIT_TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// Nanoseconds on `CLOCK_MONOTONIC` (a vDSO call, no syscall, on Linux).
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// [`monotonic_ns`] as of the last timer tick (a few ms behind at most), at a fraction of
/// the cost: enough for demand and activity windows of tens of milliseconds, never for
/// the budget itself.
pub fn coarse_monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both monotonic clocks are always supported
    // on Linux and served by the vDSO without a syscall.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

// The futex is the low half of a 64-bit word, which is its first four bytes only on
// little-endian targets.
const _: () = assert!(cfg!(target_endian = "little"));

/// The low 32 bits of `word`: what the kernel compares.
fn futex_addr(word: &AtomicU64) -> *mut u32 {
    word.as_ptr().cast::<u32>()
}

/// Current value of the futex half of `word`.
pub fn futex_value(word: &AtomicU64) -> u32 {
    // Truncation is the point: the kernel compares the low 32 bits.
    (word.load(std::sync::atomic::Ordering::SeqCst) & u64::from(u32::MAX)) as u32
}

/// Sleeps while `word`'s futex half equals `expected`, until `deadline_ns` (monotonic) at most.
///
/// Returns on a wake-up, a changed value, a signal or the deadline; the caller re-checks.
pub fn wait_until(word: &AtomicU64, expected: u32, deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(deadline_ns / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::try_from(deadline_ns % 1_000_000_000).unwrap_or(0),
    };
    // SAFETY: the address is the first 4 bytes of a live, aligned AtomicU64 that outlives the
    // call; the kernel only reads it. `ts` is a valid timespec on the stack. FUTEX_WAIT_BITSET
    // without FUTEX_CLOCK_REALTIME takes an absolute CLOCK_MONOTONIC deadline.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAIT_BITSET,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        );
    }
}

/// Wakes every thread, in any process, sleeping on `word`.
pub fn wake_all(word: &AtomicU64) {
    // SAFETY: the address is a live, aligned AtomicU64; FUTEX_WAKE does not dereference it
    // beyond hashing the mapping it belongs to.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            futex_addr(word),
            libc::FUTEX_WAKE,
            i32::MAX,
        );
    }
}

/// Lowers the calling thread's timer slack for the lifetime of the guard.
pub struct TightTimerSlack {
    previous: libc::c_int,
}

impl TightTimerSlack {
    /// Sets the slack to 1 µs, remembering the previous value.
    pub fn engage() -> Self {
        // SAFETY: PR_GET_TIMERSLACK takes no pointer argument and only returns a value.
        let previous = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer; it affects only the calling thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, WAIT_TIMER_SLACK_NS, 0, 0, 0) };
        Self { previous }
    }
}

impl Drop for TightTimerSlack {
    fn drop(&mut self) {
        if let Ok(previous) = libc::c_ulong::try_from(self.previous) {
            // SAFETY: as in `engage`: a plain integer argument, calling thread only.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, previous, 0, 0, 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn timed_wait_ends_near_its_deadline() {
        let word = AtomicU64::new(7);
        let _slack = TightTimerSlack::engage();
        let mut late = Vec::new();
        for _ in 0..20 {
            let deadline = monotonic_ns() + 2_000_000;
            wait_until(&word, 7, deadline);
            late.push(monotonic_ns().saturating_sub(deadline));
        }
        late.sort_unstable();
        // The median lateness is what a throttled launch pays; a loaded CI box adds noise.
        assert!(late[10] < 1_000_000, "median lateness {} ns", late[10]);
    }

    #[test]
    fn wake_releases_a_sleeper_long_before_its_deadline() {
        let word = AtomicU64::new(0);
        std::thread::scope(|s| {
            let sleeper = s.spawn(|| {
                let start = monotonic_ns();
                while futex_value(&word) == 0 {
                    wait_until(&word, 0, start + 10_000_000_000);
                }
                monotonic_ns() - start
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            word.fetch_add(1, Ordering::SeqCst);
            wake_all(&word);
            let slept = sleeper.join().expect("sleeper thread");
            assert!(
                slept < 5_000_000_000,
                "slept {slept} ns despite the wake-up"
            );
        });
    }

    #[test]
    fn changed_value_returns_at_once() {
        let word = AtomicU64::new(1);
        let start = monotonic_ns();
        wait_until(&word, 0, start + 5_000_000_000);
        assert!(monotonic_ns() - start < 1_000_000_000);
    }
}
