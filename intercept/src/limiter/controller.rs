//! The feedback loop that ties the budget to what the device really did.
//!
//! Launches are charged an estimate when they are admitted (the device time of a kernel is
//! not known before it ran). One process per container, the measurer, periodically reads the
//! container's cumulative measured busy time, settled up to an instant a little in the past,
//! and trues the budget up by a fraction ([`CORRECTION_GAIN_PERCENT`]) of the gap between that
//! and everything charged up to the same instant (from a short history of the charge counter:
//! comparing with the charges of *now* would turn every change of pace into a phantom error
//! and a debt to repay later). This is an integral controller on the accounting error: the gap shrinks geometrically
//! (halved every period at a gain of 50 %, so under 0.1 % of a step is left after 0.3 s at a
//! 25 ms period), and in the long run the budget is debited by exactly the measured busy time,
//! so the share equals the refill rate whatever the estimates were. Applying a fraction rather
//! than the whole gap damps the lag of the measurement (work enqueued but not yet run, NVML's
//! sample period on a real GPU) instead of turning it into swings.
//!
//! The same loop learns the per-launch estimate (measured time per admitted launch, smoothed),
//! so that between two measurements the charges are already close to the truth and the true-up
//! stays small, and it sets the refill rate: the cap, or the whole device for a `burst`
//! container while no other container on the device shows demand — in the node's contention
//! view, or as busy time of other processes in NVML's answers (which needs no host publisher).

use std::collections::VecDeque;

use hami_ledger::compute::{Budget, Contention, PPM};

/// Share of the accounting gap applied per measurement period.
pub const CORRECTION_GAIN_PERCENT: i128 = 50;
/// Another container counts as wanting the device this long after its last launch.
pub const BURST_YIELD_WINDOW_NS: u64 = 100_000_000;
/// Other processes seen busy through NVML count as wanting the device this long.
pub const OTHERS_BUSY_HOLD_NS: u64 = 500_000_000;
/// Launches to observe before the per-launch estimate is updated.
const ESTIMATE_MIN_LAUNCHES: u64 = 4;
/// Shortest observation the per-launch estimate is updated from.
const ESTIMATE_SPAN_NS: u64 = 250_000_000;
/// How far back the charge history reaches (longer than any settle lag).
const HISTORY_NS: u64 = 3_000_000_000;

/// What the measurer remembers between periods for one device.
#[derive(Debug, Default, Clone)]
pub struct Controller {
    span_start_ns: u64,
    span_launches: u64,
    span_measured: u64,
    /// (instant, cumulative launches, cumulative estimated charge) of recent periods.
    history: VecDeque<(u64, u64, u64)>,
    /// Whether this controller has replaced the default estimate yet.
    learned: bool,
    /// Last instant the device showed other processes busy (NVML), 0 = never.
    others_busy_at_ns: u64,
}

/// What one period did, for counters and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Device-ns debited (positive) or credited (negative) by the true-up.
    pub correction_ns: i128,
    /// Refill rate now in force, ppm.
    pub rate_ppm: u64,
    /// Sleepers must be woken: budget or rate went up.
    pub wake: bool,
}

impl Controller {
    /// One measurement period: publishes `measured_total_ns` (cumulative, settled `lag_ns`
    /// behind now; `None` when nothing can be measured, then the estimates stand alone), trues
    /// the budget up, learns the estimate and sets the rate. `cap_ppm`/`burst` are the
    /// container's limits.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        budget: Budget<'_>,
        contention: Option<Contention<'_>>,
        measured_total_ns: Option<u64>,
        others_busy: Option<bool>,
        lag_ns: u64,
        now_ns: u64,
        cap_ppm: u64,
        burst: bool,
    ) -> Step {
        let mut step = Step::default();
        self.history
            .push_back((now_ns, budget.launches(), budget.estimated_total_ns()));
        while self
            .history
            .front()
            .is_some_and(|&(t, _, _)| now_ns.saturating_sub(t) > HISTORY_NS)
        {
            self.history.pop_front();
        }
        // Measured time is settled `lag_ns` behind now: compare it with what was charged up
        // to that same instant, or every change of pace would look like an error.
        let settled_at = now_ns.saturating_sub(lag_ns);
        let settled = self
            .history
            .iter()
            .rev()
            .find(|&&(t, _, _)| t <= settled_at)
            .copied();
        if let (Some(measured_total_ns), Some((_, launches, estimated))) =
            (measured_total_ns, settled)
        {
            budget.set_measured_ns(measured_total_ns);
            let charged = i128::from(estimated) + budget.net_correction_ns();
            let gap = i128::from(measured_total_ns) - charged;
            let correction = gap * CORRECTION_GAIN_PERCENT / 100;
            if correction > 0 {
                budget.debit_correction(u64::try_from(correction).unwrap_or(u64::MAX));
            } else if correction < 0 {
                step.wake |=
                    budget.credit_correction(u64::try_from(-correction).unwrap_or(u64::MAX));
            }
            step.correction_ns = correction;
            self.learn_estimate(budget, measured_total_ns, launches, settled_at);
        }

        // Someone else wants the device if the node view shows another container's recent
        // launches, or NVML showed other processes busy lately (also without a node view).
        // With neither source, a burst container stays at its cap: the safe side.
        if others_busy == Some(true) {
            self.others_busy_at_ns = now_ns;
        }
        let seen_busy = self.others_busy_at_ns != 0
            && now_ns.saturating_sub(self.others_busy_at_ns) < OTHERS_BUSY_HOLD_NS;
        let node_demand = contention
            .map(|c| c.others_demand(budget.contention_slot(), now_ns, BURST_YIELD_WINDOW_NS));
        let others_want_it = match (node_demand, others_busy) {
            (None, None) => true,
            (node, _) => node == Some(true) || seen_busy,
        };
        let rate = if burst && !others_want_it {
            PPM
        } else {
            cap_ppm
        };
        let previous_rate = budget.rate_ppm(cap_ppm);
        if budget.set_rate_ppm(rate) {
            step.wake = true;
            if rate < previous_rate {
                // Time saved up while bursting was spare capacity, not a debt to repay: the
                // neighbour that ended the burst gets the device at once.
                budget.forfeit_unused();
            }
        }
        step.rate_ppm = rate;
        step
    }

    /// Learns the per-launch estimate as measured busy time per launch over spans of at least
    /// [`ESTIMATE_SPAN_NS`], both taken at the settled instant: comparing busy time with the
    /// launches of another moment would make a throttled span look like long kernels and an
    /// unthrottled one like short kernels, and the estimate swing.
    fn learn_estimate(
        &mut self,
        budget: Budget<'_>,
        measured_total_ns: u64,
        launches: u64,
        settled_at: u64,
    ) {
        if self.span_start_ns == 0 {
            self.span_start_ns = settled_at;
            self.span_launches = launches;
            self.span_measured = measured_total_ns;
            return;
        }
        let observed = launches.saturating_sub(self.span_launches);
        let span = settled_at.saturating_sub(self.span_start_ns);
        if observed < ESTIMATE_MIN_LAUNCHES || span < ESTIMATE_SPAN_NS {
            return;
        }
        let busy = measured_total_ns.saturating_sub(self.span_measured);
        if busy > 0 {
            let sample = busy / observed;
            // The first sample replaces the default guess; later ones are smoothed.
            let estimate = match (budget.launch_estimate_ns(), self.learned) {
                (old, true) if old > 0 => (old + sample) / 2,
                _ => sample,
            };
            budget.set_launch_estimate_ns(estimate.max(1));
            self.learned = true;
        }
        self.span_start_ns = settled_at;
        self.span_launches = launches;
        self.span_measured = measured_total_ns;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use hami_ledger::compute::{Budget, COMPUTE_WORDS, PPM};

    use super::Controller;

    const MS: u64 = 1_000_000;

    /// Exact estimates, a measurement that trails by `lag`, and a change of pace: the true-up
    /// must find nothing to correct (comparing with current charges would credit the lag's
    /// worth of launches while fast and claw it back as a debt when the pace drops).
    #[test]
    fn a_change_of_pace_under_a_lagging_measurement_creates_no_debt() {
        let cell: [AtomicU64; COMPUTE_WORDS] = std::array::from_fn(|_| AtomicU64::new(0));
        let budget = Budget::with_depth(&cell, u64::MAX / 4);
        budget.set_launch_estimate_ns(MS);
        let lag = 100 * MS;
        let mut controller = Controller::default();
        let mut charged_history: Vec<(u64, u64)> = Vec::new();
        let mut worst = 0i128;
        for period in 1..=120u64 {
            let now = period * 25 * MS;
            let launches = if now < 1_500 * MS { 25 } else { 5 };
            for _ in 0..launches {
                let _ = budget.claim(MS, now, PPM);
            }
            charged_history.push((now, budget.estimated_total_ns()));
            let measured = charged_history
                .iter()
                .rev()
                .find(|&&(t, _)| t + lag <= now)
                .map_or(0, |&(_, total)| total);
            controller.step(budget, None, Some(measured), None, lag, now, PPM / 2, false);
            worst = worst.max(budget.net_correction_ns().abs());
        }
        assert!(worst <= i128::from(MS), "phantom correction of {worst} ns");
        assert_eq!(budget.launch_estimate_ns(), MS, "the estimate stays exact");
    }

    /// Kernels twice as long as charged: the true-up debits the missing time, and the
    /// estimate learns the real length.
    #[test]
    fn underestimated_kernels_are_debited_and_learned() {
        let cell: [AtomicU64; COMPUTE_WORDS] = std::array::from_fn(|_| AtomicU64::new(0));
        let budget = Budget::with_depth(&cell, u64::MAX / 4);
        budget.set_launch_estimate_ns(MS);
        let mut controller = Controller::default();
        let mut measured = 0;
        for period in 1..=80u64 {
            let now = period * 25 * MS;
            for _ in 0..10 {
                let _ = budget.claim(budget.launch_estimate_ns(), now, PPM);
                measured += 2 * MS;
            }
            controller.step(budget, None, Some(measured), None, 0, now, PPM / 2, false);
        }
        let charged = i128::from(budget.estimated_total_ns()) + budget.net_correction_ns();
        let gap = i128::from(measured) - charged;
        assert!(gap.abs() <= i128::from(2 * MS), "{gap} ns left uncorrected");
        let estimate = budget.launch_estimate_ns();
        assert!(
            (19 * MS / 10..=21 * MS / 10).contains(&estimate),
            "estimate {estimate}"
        );
    }
}
