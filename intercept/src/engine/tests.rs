//! Engine rules against an in-memory double of the ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hami_ledger::OverCap;

use super::accounts::Accounts;
use super::table::KeyKind;
use super::{AllocError, DevicePolicy, Engine};

const MIB: u64 = 1 << 20;

#[derive(Default)]
struct Counters {
    used: [AtomicU64; 2],
}

impl Accounts for Arc<Counters> {
    fn reserve(&self, device: usize, bytes: u64, limit: u64) -> Result<(), OverCap> {
        let total = &self.used[device];
        total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |cur| {
                cur.checked_add(bytes).filter(|next| *next <= limit)
            })
            .map(|_| ())
            .map_err(|used| OverCap {
                device,
                requested: bytes,
                used,
                limit,
            })
    }

    fn release(&self, device: usize, bytes: u64) {
        self.used[device].fetch_sub(bytes, Ordering::SeqCst);
    }

    fn used(&self, device: usize) -> u64 {
        self.used[device].load(Ordering::SeqCst)
    }
}

fn engine(limit: u64, overhead: u64) -> (Engine<Arc<Counters>>, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let devices = vec![
        DevicePolicy {
            uuid: Some("GPU-aaaa".into()),
            limit,
        },
        DevicePolicy {
            uuid: Some("GPU-bbbb".into()),
            limit: u64::MAX,
        },
    ];
    (
        Engine::new(Arc::clone(&counters), devices, 1024, overhead),
        counters,
    )
}

#[test]
fn over_the_cap_never_reaches_the_driver() {
    let (engine, counters) = engine(64 * MIB, 0);
    let mut driver_calls = 0;
    let mut next = 0x1000u64;
    let mut alloc = |engine: &Engine<Arc<Counters>>| {
        engine.allocate(
            0,
            KeyKind::DevicePointer,
            16 * MIB,
            || {
                driver_calls += 1;
                next += 0x1000;
                Ok::<u64, i32>(next)
            },
            |_| {},
        )
    };
    for _ in 0..4 {
        alloc(&engine).unwrap();
    }
    assert!(matches!(alloc(&engine), Err(AllocError::OverCap(_))));
    assert_eq!(driver_calls, 4);
    assert_eq!(counters.used(0), 64 * MIB);
}

#[test]
fn a_driver_failure_rolls_the_reservation_back() {
    let (engine, counters) = engine(64 * MIB, 0);
    let result = engine.allocate(0, KeyKind::DevicePointer, 16 * MIB, || Err(2), |_| {});
    assert_eq!(result, Err(AllocError::Driver(2)));
    assert_eq!(counters.used(0), 0);
}

#[test]
fn free_releases_exactly_what_was_charged_and_is_always_forwarded() {
    let (engine, counters) = engine(64 * MIB, 0);
    let ptr = engine
        .allocate(
            0,
            KeyKind::DevicePointer,
            6 * MIB,
            || Ok::<u64, i32>(0xabc000),
            |_| {},
        )
        .unwrap();
    let mut forwarded = 0;
    engine
        .free(KeyKind::DevicePointer, 0xdead000, || {
            forwarded += 1;
            Ok::<(), i32>(())
        })
        .unwrap();
    assert_eq!(counters.used(0), 6 * MIB, "untracked free releases nothing");
    engine
        .free(KeyKind::DevicePointer, ptr, || {
            forwarded += 1;
            Ok::<(), i32>(())
        })
        .unwrap();
    assert_eq!(forwarded, 2);
    assert_eq!(counters.used(0), 0);
}

#[test]
fn a_refused_free_keeps_the_record() {
    let (engine, counters) = engine(64 * MIB, 0);
    let ptr = engine
        .allocate(0, KeyKind::MemHandle, 2 * MIB, || Ok::<u64, i32>(7), |_| {})
        .unwrap();
    assert_eq!(engine.free(KeyKind::MemHandle, ptr, || Err(1)), Err(1));
    assert_eq!(counters.used(0), 2 * MIB);
    engine
        .free(KeyKind::MemHandle, ptr, || Ok::<(), i32>(()))
        .unwrap();
    assert_eq!(counters.used(0), 0);
}

#[test]
fn context_overhead_is_charged_once_per_device() {
    let (engine, counters) = engine(64 * MIB, 10 * MIB);
    for raw in 1..=3 {
        engine
            .allocate(
                0,
                KeyKind::DevicePointer,
                MIB,
                || Ok::<u64, i32>(raw),
                |_| {},
            )
            .unwrap();
    }
    engine
        .allocate(1, KeyKind::DevicePointer, MIB, || Ok::<u64, i32>(9), |_| {})
        .unwrap();
    assert_eq!(counters.used(0), 13 * MIB);
    assert_eq!(counters.used(1), 11 * MIB);
}

#[test]
fn a_context_that_does_not_fit_is_refused_and_retried_later() {
    let (engine, counters) = engine(8 * MIB, 10 * MIB);
    assert!(matches!(engine.charge_context(0), Err(OverCap { .. })));
    assert_eq!(counters.used(0), 0);
    assert!(
        engine.charge_context(0).is_err(),
        "the flag was rolled back"
    );
}

#[test]
fn pitch_style_allocations_settle_on_the_real_size() {
    let (engine, counters) = engine(64 * MIB, 0);
    engine
        .allocate_adjusted(
            0,
            KeyKind::DevicePointer,
            8 * MIB,
            || Ok::<_, i32>((1, 4 * MIB)),
            |_| {},
        )
        .unwrap();
    assert_eq!(counters.used(0), 4 * MIB);
    engine
        .allocate_adjusted(
            0,
            KeyKind::DevicePointer,
            8 * MIB,
            || Ok::<_, i32>((2, 10 * MIB)),
            |_| {},
        )
        .unwrap();
    assert_eq!(counters.used(0), 14 * MIB);
    let mut undone = Vec::new();
    let refused = engine.allocate_adjusted(
        0,
        KeyKind::DevicePointer,
        40 * MIB,
        || Ok::<_, i32>((3, 60 * MIB)),
        |raw| undone.push(raw),
    );
    assert!(matches!(refused, Err(AllocError::OverCap(_))));
    assert_eq!(undone, vec![3]);
    assert_eq!(counters.used(0), 14 * MIB);
}

#[test]
fn unknown_devices_have_no_capacity() {
    let (engine, _) = engine(64 * MIB, 0);
    assert!(engine.reserve(5, 1).is_err());
    assert_eq!(engine.index_of_uuid("gpu-BBBB"), Some(1));
    assert_eq!(engine.index_of_uuid("GPU-cccc"), None);
}

#[test]
fn concurrent_threads_never_overshoot() {
    let (engine, counters) = engine(100 * MIB, 0);
    let engine = Arc::new(engine);
    let next = Arc::new(AtomicU64::new(1));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let engine = Arc::clone(&engine);
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for round in 0..5000u64 {
                    if round % 3 == 2 {
                        if let Some(ptr) = mine.pop() {
                            engine
                                .free(KeyKind::DevicePointer, ptr, || Ok::<(), i32>(()))
                                .unwrap();
                        }
                    } else if let Ok(ptr) = engine.allocate(
                        0,
                        KeyKind::DevicePointer,
                        (round % 7 + 1) * MIB,
                        || Ok::<u64, i32>(next.fetch_add(1, Ordering::Relaxed) << 12),
                        |_| {},
                    ) {
                        mine.push(ptr);
                    }
                    assert!(engine.used(0) <= 100 * MIB);
                }
                mine
            })
        })
        .collect();
    let live: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(counters.used(0), engine.live_bytes(0));
    for ptr in live {
        engine
            .free(KeyKind::DevicePointer, ptr, || Ok::<(), i32>(()))
            .unwrap();
    }
    assert_eq!(counters.used(0), 0);
}
