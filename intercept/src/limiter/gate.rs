//! The launch gate: what one launch does before it reaches the driver.
//!
//! Uncapped, normal-priority device with no high-priority neighbour: two process-local loads
//! ([`super::lane`]). Capped fast path (budget available, no high-priority neighbour): a clock
//! read and a handful of atomics on the container's compute cell
//! ([`hami_ledger::compute::Budget::claim`]); no lock, syscall or allocation. Slow path: the thread sleeps on the cell's futex word until the
//! computed instant its claim is covered (or until woken because budget appeared early), with
//! its timer slack lowered so it wakes within tens of microseconds of that instant.
//!
//! Liveness: a wait is bounded by `claim / rate` and never longer than [`MAX_WAIT_NS`], and a
//! normal-priority container yields to a high-priority one for at most [`MAX_YIELD_NS`] per
//! launch, so a capped rank of a collective is slowed, never stopped.

use hami_ledger::compute::futex::{
    TightTimerSlack, coarse_monotonic_ns, futex_value, monotonic_ns, wait_until,
};
use hami_ledger::compute::{Admission, Budget, Contention, PPM};

use super::lane::UncappedLane;

/// Longest a single launch waits for budget: a cap delays launches, it never blocks them.
pub const MAX_WAIT_NS: u64 = 2_000_000_000;
/// Longest a normal launch yields to high-priority demand before it goes anyway.
pub const MAX_YIELD_NS: u64 = 1_000_000_000;
/// A high-priority container counts as active this long after its last launch.
pub const HIGH_ACTIVE_WINDOW_NS: u64 = 50_000_000;
/// Charge for a launch before anything was learned about the container's kernels: on the
/// long side of common kernels, so that a wrong first guess throttles for a moment (and is
/// credited back) rather than letting a queue of work past the cap.
pub const DEFAULT_LAUNCH_ESTIMATE_NS: u64 = 2_000_000;

/// How a device's cap applies to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateConfig {
    /// The cap in ppm of the device (`PPM` = whole device).
    pub cap_ppm: u64,
    /// May use idle capacity above the cap.
    pub burst: bool,
    /// Other containers yield to this one.
    pub high_priority: bool,
}

/// One device's gate in one process: the container's budget and the node's contention view.
pub struct DeviceGate<'a> {
    budget: Budget<'a>,
    contention: Option<Contention<'a>>,
    config: GateConfig,
    /// Uncapped, normal-priority devices only: the launch path that skips the clock.
    lane: Option<UncappedLane>,
}

/// What happened to one launch, for tests and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Passage {
    /// Nanoseconds spent waiting for budget.
    pub waited_ns: u64,
    /// Nanoseconds spent yielding to high-priority demand.
    pub yielded_ns: u64,
}

impl<'a> DeviceGate<'a> {
    /// A gate over a container's budget cell and, when the node part is there, its contention.
    pub fn new(budget: Budget<'a>, contention: Option<Contention<'a>>, config: GateConfig) -> Self {
        let lane = (config.cap_ppm >= PPM && !config.high_priority).then(UncappedLane::default);
        Self {
            budget,
            contention,
            config,
            lane,
        }
    }

    /// The fast lane, when the device is uncapped and of normal priority.
    pub fn lane(&self) -> Option<&UncappedLane> {
        self.lane.as_ref()
    }

    /// The container's budget on this device.
    pub fn budget(&self) -> Budget<'a> {
        self.budget
    }

    /// The node's contention view of this device, if the node part is mounted.
    pub fn contention(&self) -> Option<Contention<'a>> {
        self.contention
    }

    /// The gate's configuration.
    pub fn config(&self) -> GateConfig {
        self.config
    }

    /// Admits one launch, waiting as long as the cap (and priority) requires.
    #[inline]
    pub fn admit(&self) -> Passage {
        if let Some(lane) = &self.lane
            && lane.pass(self.budget)
        {
            return Passage::default();
        }
        self.admit_fully()
    }

    /// The full path: the clock, priority, and for a capped device the budget.
    #[inline(never)]
    fn admit_fully(&self) -> Passage {
        let mut passage = Passage::default();
        let uncapped = self.config.cap_ppm >= PPM;
        // Uncapped launches only feed windows of tens of ms (demand, priority), so they read the
        // cheap coarse clock; the budget of a capped one needs the precise clock.
        let clock = if uncapped {
            coarse_monotonic_ns
        } else {
            monotonic_ns
        };
        let mut now = clock();
        if !self.config.high_priority {
            passage.yielded_ns = self.yield_to_high_priority(now);
            if passage.yielded_ns > 0 {
                now = clock();
            }
        }
        if uncapped {
            // Only make the demand visible to burst and low-priority neighbours.
            self.budget.mark_demand(now);
            return passage;
        }
        let rate = self.budget.rate_ppm(self.config.cap_ppm);
        let estimate = match self.budget.launch_estimate_ns() {
            0 => DEFAULT_LAUNCH_ESTIMATE_NS,
            learned => learned,
        };
        if let Admission::Wait { claim_end } = self.budget.claim(estimate, now, rate) {
            passage.waited_ns = self.wait_for_budget(claim_end, now);
        }
        let throttled = passage.waited_ns + passage.yielded_ns;
        if throttled > 0 {
            self.budget.add_throttled_ns(throttled);
        }
        passage
    }

    /// Sleeps until the budget covers `claim_end`, a wake-up says budget appeared, or the
    /// liveness bound passes. Returns the time waited.
    fn wait_for_budget(&self, claim_end: u64, start: u64) -> u64 {
        let _slack = TightTimerSlack::engage();
        let word = self.budget.wake_word();
        let give_up_at = start + MAX_WAIT_NS;
        loop {
            let seq = futex_value(word);
            let now = monotonic_ns();
            // The rate may change while we wait (burst ends, cap re-published): read it afresh.
            let rate = self.budget.rate_ppm(self.config.cap_ppm);
            self.budget.refill(now, rate);
            if self.budget.covers(claim_end) || now >= give_up_at {
                return now - start;
            }
            let deadline = self.budget.ready_at(claim_end, rate).min(give_up_at);
            self.budget.waiter_enter();
            wait_until(word, seq, deadline.max(now + 1));
            self.budget.waiter_leave();
        }
    }

    /// While another container of high priority that this one must yield to is active on the
    /// device, waits (bounded). A capped container yields only to uncapped high ones: its own
    /// cap already leaves a capped high neighbour that one's share.
    ///
    /// Each sleep ends at the computed instant the high container's activity window expires
    /// (its last published demand plus the window) or on a wake-up; nothing polls.
    fn yield_to_high_priority(&self, start: u64) -> u64 {
        let Some(contention) = self.contention else {
            return 0;
        };
        let own = self.budget.contention_slot();
        let capped = self.config.cap_ppm < PPM;
        let active_until = || {
            let last = contention.latest_high_demand(own, capped);
            if last == 0 {
                0
            } else {
                last + HIGH_ACTIVE_WINDOW_NS
            }
        };
        if active_until() <= start {
            return 0;
        }
        let _slack = TightTimerSlack::engage();
        let word = self.budget.wake_word();
        let give_up_at = start + MAX_YIELD_NS;
        let mut now = start;
        loop {
            let until = active_until();
            if until <= now || now >= give_up_at {
                return now - start;
            }
            // Still wanting the device: keep the demand signal fresh for the node view.
            self.budget.mark_demand(now);
            let seq = futex_value(word);
            wait_until(word, seq, until.min(give_up_at));
            now = monotonic_ns();
        }
    }
}

/// Converts a percentage cap (1..=100) to ppm of the device.
pub fn percent_to_ppm(percent: u32) -> u64 {
    u64::from(percent.clamp(1, 100)) * (PPM / 100)
}
