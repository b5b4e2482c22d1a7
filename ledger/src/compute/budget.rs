//! A container's budget on one device: the token bucket every process of the container
//! claims launches from (usage part, one cell per container and device).

use std::sync::atomic::{AtomicU64, Ordering};

use super::contention::ContentionSlot;
use super::words::{COMPUTE_WORDS, CONTENTION_SLOTS, DEFAULT_DEPTH_NS, PPM, usage_word};

/// Longest idle gap credited in one refill; beyond it the bucket is full anyway.
const MAX_REFILL_GAP_NS: u64 = 10_000_000_000;

/// What a launch must do after claiming its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Budget covered the claim: launch now.
    Go,
    /// Wait until `REFILLED` reaches `claim_end` (device-ns, cumulative).
    Wait {
        /// The end of this launch's claim on the cumulative counter.
        claim_end: u64,
    },
}

/// A container's budget on one device: a view over the usage part's compute cell.
#[derive(Clone, Copy)]
pub struct Budget<'a> {
    words: &'a [AtomicU64; COMPUTE_WORDS],
    depth_ns: u64,
}

impl<'a> Budget<'a> {
    /// Views `words` (a usage-part compute cell) as a budget of [`DEFAULT_DEPTH_NS`] depth.
    pub fn new(words: &'a [AtomicU64; COMPUTE_WORDS]) -> Self {
        Self::with_depth(words, DEFAULT_DEPTH_NS)
    }

    /// Views `words` as a budget that keeps at most `depth_ns` of unused device time.
    pub fn with_depth(words: &'a [AtomicU64; COMPUTE_WORDS], depth_ns: u64) -> Self {
        Self { words, depth_ns }
    }

    fn word(&self, index: usize) -> &'a AtomicU64 {
        &self.words[index]
    }

    /// The raw words, for the futex and for displays.
    pub fn words(&self) -> &'a [AtomicU64; COMPUTE_WORDS] {
        self.words
    }

    /// The futex word: the low half of `WAKE_SEQ` (all supported targets are little-endian).
    pub fn wake_word(&self) -> &'a AtomicU64 {
        self.word(usage_word::WAKE_SEQ)
    }

    /// The refill rate in force: the cell's published rate, else `fallback_ppm`.
    pub fn rate_ppm(&self, fallback_ppm: u64) -> u64 {
        match self.word(usage_word::RATE_PPM).load(Ordering::Relaxed) {
            0 => fallback_ppm,
            rate => rate,
        }
    }

    /// Publishes a new refill rate; returns true when it changed (waiters should be woken).
    pub fn set_rate_ppm(&self, rate_ppm: u64) -> bool {
        let rate = rate_ppm.clamp(1, PPM);
        self.word(usage_word::RATE_PPM).swap(rate, Ordering::AcqRel) != rate
    }

    /// Bucket depth in ns.
    pub fn depth_ns(&self) -> u64 {
        self.depth_ns
    }

    /// The container's contention slot on this device, as recorded by the host publisher.
    pub fn contention_slot(&self) -> Option<ContentionSlot> {
        match self
            .word(usage_word::CONTENTION_SLOT)
            .load(Ordering::Acquire)
        {
            0 => None,
            n if n as usize > CONTENTION_SLOTS => Some(ContentionSlot::Overflow),
            n => Some(ContentionSlot::Own(n as usize - 1)),
        }
    }

    /// Records the container's contention slot (host publisher).
    pub fn set_contention_slot(&self, slot: ContentionSlot) {
        let value = match slot {
            ContentionSlot::Own(i) => i as u64 + 1,
            ContentionSlot::Overflow => CONTENTION_SLOTS as u64 + 1,
        };
        self.word(usage_word::CONTENTION_SLOT)
            .store(value, Ordering::Release);
    }

    /// Credits the time elapsed since the last refill at `rate_ppm`; one caller wins per instant.
    pub fn refill(&self, now_ns: u64, rate_ppm: u64) {
        let refill_at = self.word(usage_word::REFILL_AT);
        let last = refill_at.load(Ordering::Acquire);
        if now_ns <= last {
            return;
        }
        if refill_at
            .compare_exchange(last, now_ns, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return; // another thread credited this interval
        }
        let gap = (now_ns - last).min(MAX_REFILL_GAP_NS);
        let credit = u64::try_from(u128::from(gap) * u128::from(rate_ppm) / u128::from(PPM))
            .unwrap_or(u64::MAX);
        let refilled = self.word(usage_word::REFILLED);
        let before = refilled.fetch_add(credit, Ordering::AcqRel);
        let ceiling = self
            .word(usage_word::DEBITED)
            .load(Ordering::Acquire)
            .saturating_add(self.depth_ns());
        if before.saturating_add(credit) > ceiling {
            // Keep at most `depth` of unused budget; never take back what is already below it.
            refilled.fetch_min(ceiling.max(before), Ordering::AcqRel);
        }
    }

    /// Claims `cost_ns` for one launch at `now_ns` (refilling first) and says whether it may go.
    pub fn claim(&self, cost_ns: u64, now_ns: u64, rate_ppm: u64) -> Admission {
        self.refill(now_ns, rate_ppm);
        self.mark_demand(now_ns);
        let claim_end = self
            .word(usage_word::DEBITED)
            .fetch_add(cost_ns, Ordering::AcqRel)
            .saturating_add(cost_ns);
        self.word(usage_word::LAUNCHES)
            .fetch_add(1, Ordering::Relaxed);
        if self.word(usage_word::REFILLED).load(Ordering::Acquire) >= claim_end {
            Admission::Go
        } else {
            Admission::Wait { claim_end }
        }
    }

    /// True once the budget covers a claim ending at `claim_end`.
    pub fn covers(&self, claim_end: u64) -> bool {
        self.word(usage_word::REFILLED).load(Ordering::Acquire) >= claim_end
    }

    /// Monotonic ns at which, with no other credit, the budget will cover `claim_end`.
    pub fn ready_at(&self, claim_end: u64, rate_ppm: u64) -> u64 {
        let refilled = self.word(usage_word::REFILLED).load(Ordering::Acquire);
        let last = self.word(usage_word::REFILL_AT).load(Ordering::Acquire);
        let missing = claim_end.saturating_sub(refilled);
        let wait = u128::from(missing) * u128::from(PPM) / u128::from(rate_ppm.max(1));
        last.saturating_add(u64::try_from(wait).unwrap_or(u64::MAX))
    }

    /// Drops budget saved up beyond what is claimed (when a burst ends).
    pub fn forfeit_unused(&self) {
        let debited = self.word(usage_word::DEBITED).load(Ordering::Acquire);
        self.word(usage_word::REFILLED)
            .fetch_min(debited.max(1), Ordering::AcqRel);
    }

    /// Debits device time the estimates missed (measured above estimated).
    pub fn debit_correction(&self, ns: u64) {
        self.word(usage_word::DEBITED)
            .fetch_add(ns, Ordering::AcqRel);
        self.word(usage_word::CORRECTION_DEBITED)
            .fetch_add(ns, Ordering::Relaxed);
    }

    /// Credits device time the estimates over-charged; returns true (waiters should be woken).
    pub fn credit_correction(&self, ns: u64) -> bool {
        self.word(usage_word::REFILLED)
            .fetch_add(ns, Ordering::AcqRel);
        self.word(usage_word::CORRECTION_CREDITED)
            .fetch_add(ns, Ordering::Relaxed);
        ns > 0
    }

    /// Cumulative device-ns charged by launch estimates (corrections excluded).
    pub fn estimated_total_ns(&self) -> u64 {
        let debited = self.word(usage_word::DEBITED).load(Ordering::Acquire);
        debited.saturating_sub(
            self.word(usage_word::CORRECTION_DEBITED)
                .load(Ordering::Acquire),
        )
    }

    /// Net correction applied so far: debited minus credited corrections (signed ns).
    pub fn net_correction_ns(&self) -> i128 {
        i128::from(
            self.word(usage_word::CORRECTION_DEBITED)
                .load(Ordering::Acquire),
        ) - i128::from(
            self.word(usage_word::CORRECTION_CREDITED)
                .load(Ordering::Acquire),
        )
    }

    /// Cumulative measured busy ns (as last published by the measurer).
    pub fn measured_ns(&self) -> u64 {
        self.word(usage_word::MEASURED_NS).load(Ordering::Acquire)
    }

    /// Publishes the cumulative measured busy ns.
    pub fn set_measured_ns(&self, ns: u64) {
        self.word(usage_word::MEASURED_NS)
            .store(ns, Ordering::Release);
    }

    /// The learned per-launch estimate (0 = none yet).
    pub fn launch_estimate_ns(&self) -> u64 {
        self.word(usage_word::LAUNCH_ESTIMATE_NS)
            .load(Ordering::Relaxed)
    }

    /// Publishes the learned per-launch estimate.
    pub fn set_launch_estimate_ns(&self, ns: u64) {
        self.word(usage_word::LAUNCH_ESTIMATE_NS)
            .store(ns, Ordering::Relaxed);
    }

    /// Cumulative admitted launches.
    pub fn launches(&self) -> u64 {
        self.word(usage_word::LAUNCHES).load(Ordering::Relaxed)
    }

    /// Monotonic ns of the container's last launch attempt (0 = never).
    pub fn last_demand_ns(&self) -> u64 {
        self.word(usage_word::LAST_DEMAND_NS)
            .load(Ordering::Relaxed)
    }

    /// Marks that the container wants the device at `now_ns` (claims do it themselves).
    pub fn mark_demand(&self, now_ns: u64) {
        let demand = self.word(usage_word::LAST_DEMAND_NS);
        // Millisecond resolution is all the node view needs: skip the shared write otherwise.
        if now_ns.saturating_sub(demand.load(Ordering::Relaxed)) > 1_000_000 {
            demand.fetch_max(now_ns, Ordering::Relaxed);
        }
    }

    /// Adds to the cumulative throttled time.
    pub fn add_throttled_ns(&self, ns: u64) {
        self.word(usage_word::THROTTLED_NS)
            .fetch_add(ns, Ordering::Relaxed);
    }

    /// Cumulative ns spent throttled.
    pub fn throttled_ns(&self) -> u64 {
        self.word(usage_word::THROTTLED_NS).load(Ordering::Relaxed)
    }

    /// Counts a thread going to sleep on the wake word.
    pub fn waiter_enter(&self) {
        self.word(usage_word::WAITERS)
            .fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a thread leaving its sleep (saturating: a dead sleeper never underflows it).
    pub fn waiter_leave(&self) {
        let _ =
            self.word(usage_word::WAITERS)
                .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
    }

    /// Bumps the wake sequence; returns true when someone may be sleeping (then call FUTEX_WAKE).
    pub fn bump_wake_seq(&self) -> bool {
        self.wake_word().fetch_add(1, Ordering::SeqCst);
        self.word(usage_word::WAITERS).load(Ordering::SeqCst) > 0
    }

    /// Tries to become (or stay) the container's measurer until `now_ns + lease_ns`.
    ///
    /// A lease that expired (its holder died or stopped launching) is taken over by CAS, so
    /// exactly one live process measures at a time and a dead one is replaced within one lease.
    pub fn hold_measurer_lease(&self, pid: u32, now_ns: u64, lease_ns: u64) -> bool {
        let holder = self.word(usage_word::MEASURER_PID);
        let lease = self.word(usage_word::MEASURER_LEASE_NS);
        let current = holder.load(Ordering::Acquire);
        let until = lease.load(Ordering::Acquire);
        if current == u64::from(pid) {
            lease.fetch_max(now_ns + lease_ns, Ordering::AcqRel);
            return true;
        }
        if current != 0 && until > now_ns {
            return false;
        }
        if holder
            .compare_exchange(current, u64::from(pid), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            lease.store(now_ns + lease_ns, Ordering::Release);
            true
        } else {
            false
        }
    }
}
