//! What the limiter's own mechanics cost, in this process: admitting one launch when budget
//! is available (a monotonic clock read and the claim on the shared compute cell, against the
//! clock read alone; medians over rounds, one thread and two threads on one cell), and how
//! late a waiting launch wakes (at its computed deadline, and after a wake-up), with the very
//! wait primitive the limiter uses (`hami_ledger::compute::futex`).

use std::sync::atomic::AtomicU64;
use std::time::Instant;

use hami_ledger::compute::futex::{
    TightTimerSlack, futex_value, monotonic_ns, wait_until, wake_all,
};
use hami_ledger::compute::{Budget, COMPUTE_WORDS, PPM};
use serde::Serialize;

use super::metrics::median;

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

/// How late waiting launches wake, µs (median and 99th percentile).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct WakeLatency {
    /// Past the computed instant the budget covers the claim (a timed wait).
    pub deadline_p50_us: f64,
    pub deadline_p99_us: f64,
    /// After another thread made budget appear and woke the sleeper.
    pub woken_p50_us: f64,
    pub woken_p99_us: f64,
}

const WAITS: usize = 200;

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index.min(values.len() - 1)]
}

/// Measures wake-up lateness: timed waits 1 ms out, and wake-ups from another thread.
pub fn measure_wake() -> WakeLatency {
    let word = AtomicU64::new(0);
    let mut late = Vec::with_capacity(WAITS);
    {
        let _slack = TightTimerSlack::engage();
        for _ in 0..WAITS {
            let deadline = monotonic_ns() + 1_000_000;
            let seq = futex_value(&word);
            while monotonic_ns() < deadline {
                wait_until(&word, seq, deadline);
            }
            late.push(monotonic_ns().saturating_sub(deadline) as f64 / 1e3);
        }
    }
    let woken_at = AtomicU64::new(0);
    let mut woken = Vec::with_capacity(WAITS);
    std::thread::scope(|s| {
        let sleeper = s.spawn(|| {
            let _slack = TightTimerSlack::engage();
            for round in 1..=WAITS as u64 {
                // Sleep until the waker moves the sequence to `round`, as a throttled launch
                // sleeps until a measurer credits budget.
                loop {
                    let seq = futex_value(&word);
                    if u64::from(seq) >= round {
                        break;
                    }
                    wait_until(&word, seq, monotonic_ns() + 1_000_000_000);
                }
                woken_at.store(monotonic_ns(), std::sync::atomic::Ordering::SeqCst);
            }
        });
        for _ in 0..WAITS {
            std::thread::sleep(std::time::Duration::from_micros(500));
            let woke_at = monotonic_ns();
            word.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            wake_all(&word);
            while woken_at.load(std::sync::atomic::Ordering::SeqCst) < woke_at {
                std::hint::spin_loop();
            }
            woken.push((woken_at.load(std::sync::atomic::Ordering::SeqCst) - woke_at) as f64 / 1e3);
        }
        let _ = sleeper.join();
    });
    WakeLatency {
        deadline_p50_us: percentile(&mut late, 0.5),
        deadline_p99_us: percentile(&mut late, 0.99),
        woken_p50_us: percentile(&mut woken, 0.5),
        woken_p99_us: percentile(&mut woken, 0.99),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wake_latencies_are_ordered_percentiles() {
        let wake = super::measure_wake();
        assert!(wake.deadline_p50_us >= 0.0 && wake.deadline_p99_us >= wake.deadline_p50_us);
        assert!(wake.woken_p50_us > 0.0 && wake.woken_p99_us >= wake.woken_p50_us);
    }

    #[test]
    fn the_measurement_reports_positive_costs_with_the_clock_included() {
        let cost = super::measure();
        assert!(cost.clock_ns > 0.0);
        assert!(cost.admit_ns >= cost.clock_ns * 0.5, "{cost:?}");
    }
}
