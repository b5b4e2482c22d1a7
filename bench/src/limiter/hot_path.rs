//! What admitting one launch costs when budget is available: the limiter's hot path (a
//! monotonic clock read and the claim on the shared compute cell), against the clock read
//! alone, in this process. Medians over rounds, one thread and two threads on one cell.

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use hami_ledger::compute::{Budget, COMPUTE_WORDS, PPM};
use serde::Serialize;

use super::metrics::median;
use super::probe::monotonic_ns;

const ROUNDS: usize = 11;
const CALLS: u32 = 200_000;

/// Nanoseconds per call, medians over rounds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct HotPathCost {
    /// `CLOCK_MONOTONIC` read alone (the baseline every admission pays).
    pub clock_ns: f64,
    /// Clock read + claim with budget available, one thread.
    pub admit_ns: f64,
    /// The same, two threads claiming on one cell (two processes of a container).
    pub admit_contended_ns: f64,
}

fn per_call(mut body: impl FnMut(), calls: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        body();
    }
    start.elapsed().as_nanos() as f64 / f64::from(calls)
}

/// Measures the hot path.
pub fn measure() -> HotPathCost {
    let cell: [AtomicU64; COMPUTE_WORDS] = std::array::from_fn(|_| AtomicU64::new(0));
    // A bucket deep enough that no claim ever waits: only the admission cost is timed.
    let budget = Budget::with_depth(&cell, u64::MAX / 4);
    budget.refill(1, PPM);
    budget.refill(u64::MAX / 8, PPM);
    let admit = || {
        let now = monotonic_ns();
        std::hint::black_box(budget.claim(1, now, PPM));
    };
    let mut clock = Vec::new();
    let mut single = Vec::new();
    let mut contended = Vec::new();
    for _ in 0..ROUNDS {
        clock.push(per_call(
            || {
                std::hint::black_box(monotonic_ns());
            },
            CALLS,
        ));
        single.push(per_call(admit, CALLS));
        let pair = std::thread::scope(|s| {
            let other = s.spawn(|| per_call(admit, CALLS));
            let mine = per_call(admit, CALLS);
            (mine + other.join().unwrap_or(mine)) / 2.0
        });
        contended.push(pair);
    }
    HotPathCost {
        clock_ns: median(&mut clock),
        admit_ns: median(&mut single),
        admit_contended_ns: median(&mut contended),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_measurement_reports_positive_costs_with_the_clock_included() {
        let cost = super::measure();
        assert!(cost.clock_ns > 0.0);
        assert!(cost.admit_ns >= cost.clock_ns * 0.5, "{cost:?}");
    }
}
