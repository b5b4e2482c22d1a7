//! What the accounting engine adds to an allocation/free pair, without any driver: a
//! reservation in a real shared-memory usage ledger, a record in the allocation table, and the
//! release, against the same no-op "driver" called directly in the same process.
//!
//! `cargo run --release -p hami-intercept --example engine_overhead` prints medians and p99 of
//! batches, per pair, in nanoseconds. The end-to-end figure (with the wrappers and a driver)
//! comes from `hami bench hooks`.

use std::hint::black_box;
use std::time::Instant;

use hami::engine::accounts::LedgerAccounts;
use hami::engine::table::KeyKind;
use hami::engine::{DevicePolicy, Engine};
use hami_ledger::UsageLedger;

const BATCHES: usize = 400;
const PAIRS: u64 = 2_000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn time_batches(mut batch: impl FnMut(u64)) -> Vec<f64> {
    let mut samples: Vec<f64> = (0..BATCHES)
        .map(|round| {
            let start = Instant::now();
            batch(round as u64);
            start.elapsed().as_nanos() as f64 / PAIRS as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("usage.ledger");
    UsageLedger::create(&path, 1).expect("create usage ledger");
    let usage = UsageLedger::attach(&path).expect("attach usage ledger");
    let slot = usage.register().expect("register");
    let devices = vec![DevicePolicy {
        uuid: None,
        limit: 64 << 30,
    }];
    let engine = Engine::new(LedgerAccounts { usage, slot }, devices, 1 << 20, 0);

    let driver = |pointer: u64| -> Result<u64, i32> { Ok(black_box(pointer)) };
    let baseline = time_batches(|round| {
        for i in 0..PAIRS {
            let pointer = driver(((round * PAIRS + i) << 21) | 1 << 40).unwrap();
            black_box(driver(pointer).unwrap());
        }
    });
    let accounted = time_batches(|round| {
        for i in 0..PAIRS {
            let raw = ((round * PAIRS + i) << 21) | 1 << 40;
            let pointer = engine
                .allocate(0, KeyKind::DevicePointer, 2 << 20, || driver(raw), |_| {})
                .expect("under the cap");
            engine
                .free(KeyKind::DevicePointer, pointer, || {
                    driver(pointer).map(|_| ())
                })
                .unwrap();
        }
    });
    let added_p50 = percentile(&accounted, 0.5) - percentile(&baseline, 0.5);
    let added_p99 = percentile(&accounted, 0.99) - percentile(&baseline, 0.99);
    println!(
        "alloc/free pair: baseline p50 {:.1} ns, accounted p50 {:.1} ns p99 {:.1} ns; \
         added p50 {added_p50:.1} ns, p99 {added_p99:.1} ns ({BATCHES} batches of {PAIRS})",
        percentile(&baseline, 0.5),
        percentile(&accounted, 0.5),
        percentile(&accounted, 0.99),
    );
    assert_eq!(engine.used(0), 0, "every pair released what it reserved");
}
