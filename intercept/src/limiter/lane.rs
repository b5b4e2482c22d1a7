//! The fast lane of an uncapped, normal-priority device: what a launch there costs when
//! nothing can hold it back.
//!
//! Such a launch owes the limiter only two things: its demand must be visible to the node's
//! contention view (so `burst` neighbours fall back to their caps), and it must yield while a
//! high-priority neighbour is active. Doing both on every launch meant a clock read, the loads
//! of the node part's contention words and a shared-cell check: +28 ns a launch. Both are
//! served here with process-local words that the limiter's watcher thread, which wakes every
//! period anyway, keeps up to date:
//!
//! * **Demand.** A launch that finds the `launched` flag clear sets it and marks demand with
//!   the coarse clock, exactly as before; every later launch sees the flag set: one load, no
//!   store, no clock. The watcher clears the flag every period, so the first launch of each
//!   period refreshes the demand time. The container's demand therefore starts at its true
//!   first launch (a neighbour's burst ends as promptly as before) and, while it keeps
//!   launching, is never more than one period (25 ms) old, well inside the 100 ms window that
//!   burst neighbours look back over.
//! * **Priority.** The watcher sets `high_present` while the contention view holds a
//!   high-priority container other than this one (a claimed high slot, launching or not, or
//!   overflow high demand). While it is set, launches take the full path, which reads the
//!   clock and the contention words and yields exactly as it always did. A claimed slot
//!   precedes its container's first launch (the publisher claims it when the container
//!   starts), and a new gate starts with the flag set until the watcher's first look, so
//!   a normal container notices a high neighbour at the latest one period after that
//!   neighbour claimed its slot.
//!
//! Capped and high-priority devices have no lane: their launches keep the full path.

use std::sync::atomic::{AtomicBool, Ordering};

use hami_ledger::compute::futex::coarse_monotonic_ns;
use hami_ledger::compute::{Budget, Contention};

/// Process-local state of one uncapped, normal-priority device.
#[derive(Debug)]
pub struct UncappedLane {
    /// A launch marked demand since the watcher last cleared this.
    launched: AtomicBool,
    /// A high-priority container other than this one may want the device: take the full path.
    high_present: AtomicBool,
}

impl Default for UncappedLane {
    fn default() -> Self {
        Self {
            launched: AtomicBool::new(false),
            // Until the watcher has looked at the contention view, assume someone to yield to.
            high_present: AtomicBool::new(true),
        }
    }
}

impl UncappedLane {
    /// Lets one launch through when nothing can hold it back, marking the container's demand
    /// if this period has not yet; `false` when the launch must take the full path.
    #[inline(always)]
    pub fn pass(&self, budget: Budget<'_>) -> bool {
        if self.high_present.load(Ordering::Relaxed) {
            return false;
        }
        if !self.launched.load(Ordering::Relaxed) {
            self.launched.store(true, Ordering::Relaxed);
            budget.mark_demand(coarse_monotonic_ns());
        }
        true
    }

    /// The watcher's share, once a period: opens the next demand period and re-reads whether
    /// a high-priority neighbour holds the device's contention view.
    pub fn refresh(&self, budget: Budget<'_>, contention: Option<Contention<'_>>) {
        self.launched.store(false, Ordering::Relaxed);
        let high = contention.is_some_and(|c| c.high_priority_present(budget.contention_slot()));
        self.high_present.store(high, Ordering::Relaxed);
    }

    /// Whether the next launch would take the full path (for tests and debug lines).
    pub fn yields_to_priority(&self) -> bool {
        self.high_present.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use hami_ledger::compute::{COMPUTE_WORDS, ContentionCell, SlotClass};

    use super::*;

    fn words() -> [AtomicU64; COMPUTE_WORDS] {
        std::array::from_fn(|_| AtomicU64::new(0))
    }

    #[test]
    fn a_new_lane_takes_the_full_path_until_the_watcher_looked() {
        let usage = words();
        let lane = UncappedLane::default();
        assert!(!lane.pass(Budget::new(&usage)));
        lane.refresh(Budget::new(&usage), None);
        assert!(lane.pass(Budget::new(&usage)));
    }

    #[test]
    fn the_first_launch_of_each_period_marks_demand() {
        let usage = words();
        let budget = Budget::new(&usage);
        let lane = UncappedLane::default();
        lane.refresh(budget, None);
        assert!(lane.pass(budget));
        let first = budget.last_demand_ns();
        assert!(first > 0, "the first launch makes demand visible at once");
        // Later launches of the period leave the shared word alone.
        budget.words()[hami_ledger::compute::usage_word::LAST_DEMAND_NS]
            .store(1, std::sync::atomic::Ordering::Relaxed);
        assert!(lane.pass(budget));
        assert_eq!(budget.last_demand_ns(), 1);
        // The next period's first launch refreshes it.
        lane.refresh(budget, None);
        assert!(lane.pass(budget));
        assert!(budget.last_demand_ns() >= first);
    }

    #[test]
    fn a_high_neighbour_sends_launches_down_the_full_path() {
        let usage = words();
        let node = words();
        let cell = ContentionCell::new(&node);
        let budget = Budget::new(&usage);
        budget.set_contention_slot(cell.claim_slot(SlotClass::Normal));
        let lane = UncappedLane::default();
        lane.refresh(budget, Some(cell.view()));
        assert!(lane.pass(budget), "nobody to yield to");
        let high = cell.claim_slot(SlotClass::High);
        lane.refresh(budget, Some(cell.view()));
        assert!(lane.yields_to_priority());
        assert!(!lane.pass(budget));
        cell.release_slot(high);
        lane.refresh(budget, Some(cell.view()));
        assert!(lane.pass(budget));
    }
}
