//! Cost of one reserve + release pair on the usage ledger, against a baseline in the same
//! process: the same two steps done as bare atomics on a private counter (one CAS in, one
//! `fetch_sub` out), i.e. what any correct shared counter must pay.
//!
//! `cargo run --release -p hami-ledger --example reserve_bench [-- --json]`
//!
//! Figures are per pair: the median and p99 over batches of `PAIRS_PER_BATCH` pairs.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hami_ledger::UsageLedger;

const BATCHES: usize = 2_000;
const PAIRS_PER_BATCH: u32 = 1_000;
const BYTES: u64 = 2 << 20;
const LIMIT: u64 = 1 << 40;

struct Figures {
    median: f64,
    p99: f64,
}

/// Runs `pair` in batches; returns ns per pair.
fn measure(mut pair: impl FnMut()) -> Figures {
    // Warm-up: page faults of the mapping, branch predictors, frequency.
    for _ in 0..PAIRS_PER_BATCH * 10 {
        pair();
    }
    let mut per_pair: Vec<f64> = (0..BATCHES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..PAIRS_PER_BATCH {
                pair();
            }
            start.elapsed().as_nanos() as f64 / f64::from(PAIRS_PER_BATCH)
        })
        .collect();
    per_pair.sort_by(f64::total_cmp);
    let at = |q: f64| per_pair[((per_pair.len() - 1) as f64 * q).round() as usize];
    Figures {
        median: at(0.5),
        p99: at(0.99),
    }
}

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.ledger");
    UsageLedger::create(&path, 1).expect("create usage ledger");
    let usage = UsageLedger::attach(&path).expect("attach usage ledger");
    let slot = usage.register().expect("register");

    let counter = AtomicU64::new(0);
    let baseline = measure(|| {
        let mut current = counter.load(Ordering::Relaxed);
        loop {
            let next = current + black_box(BYTES);
            if next > LIMIT {
                break;
            }
            match counter.compare_exchange_weak(current, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        counter.fetch_sub(black_box(BYTES), Ordering::SeqCst);
    });
    let ledger = measure(|| {
        usage
            .reserve(&slot, 0, black_box(BYTES), LIMIT)
            .expect("well under the cap");
        usage.release(&slot, 0, black_box(BYTES));
    });
    assert_eq!(usage.used(0), 0, "the benchmark leaked bytes");

    let ratio = ledger.median / baseline.median;
    if json {
        println!(
            "{{\"reserve_release_ns_p50\":{:.1},\"reserve_release_ns_p99\":{:.1},\
             \"baseline_ns_p50\":{:.1},\"baseline_ns_p99\":{:.1},\"ratio_p50\":{:.2}}}",
            ledger.median, ledger.p99, baseline.median, baseline.p99, ratio
        );
    } else {
        println!("uncontended reserve + release pair ({BATCHES} batches x {PAIRS_PER_BATCH}):");
        println!(
            "  ledger:   median {:6.1} ns   p99 {:6.1} ns",
            ledger.median, ledger.p99
        );
        println!(
            "  baseline: median {:6.1} ns   p99 {:6.1} ns",
            baseline.median, baseline.p99
        );
        println!("  ratio (median): {ratio:.2}x");
    }
}
