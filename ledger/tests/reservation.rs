//! Reservation, release, slots and reclaim within one process (threads for concurrency).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hami_ledger::{MAX_PROCESSES, OverCap, RegisterError, SlotState, UsageLedger};

const MIB: u64 = 1 << 20;

fn ledger(n_devices: usize) -> (tempfile::TempDir, UsageLedger) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.ledger");
    UsageLedger::create(&path, n_devices).unwrap();
    let usage = UsageLedger::attach(&path).unwrap();
    (dir, usage)
}

#[test]
fn reserve_fills_the_cap_exactly_and_refuses_one_byte_more() {
    let (_dir, usage) = ledger(2);
    let slot = usage.register().unwrap();
    let limit = 100 * MIB;
    usage.reserve(&slot, 0, 60 * MIB, limit).unwrap();
    usage.reserve(&slot, 0, 40 * MIB, limit).unwrap();
    assert_eq!(usage.used(0), limit);
    assert_eq!(
        usage.reserve(&slot, 0, 1, limit),
        Err(OverCap {
            device: 0,
            requested: 1,
            used: limit,
            limit
        })
    );
    assert_eq!(
        usage.used(0),
        limit,
        "a refused reservation changed the total"
    );
    assert_eq!(usage.used(1), 0, "devices are counted apart");
    usage.release(&slot, 0, 40 * MIB);
    assert_eq!(usage.used(0), 60 * MIB);
    usage.reserve(&slot, 0, 40 * MIB, limit).unwrap();
    let snapshot = usage.snapshot();
    assert_eq!(snapshot.devices, [limit, 0]);
    let mine = snapshot
        .slots
        .iter()
        .find(|s| s.index == slot.index())
        .unwrap();
    assert_eq!(mine.used, [limit, 0]);
    assert_eq!(mine.pid, std::process::id());
    assert_eq!(mine.state, SlotState::Live);
    assert_eq!(mine.alive, Some(true));
}

#[test]
fn a_reservation_that_would_wrap_is_refused() {
    let (_dir, usage) = ledger(1);
    let slot = usage.register().unwrap();
    usage.reserve(&slot, 0, 10, u64::MAX).unwrap();
    assert!(usage.reserve(&slot, 0, u64::MAX, u64::MAX).is_err());
    assert_eq!(usage.used(0), 10);
}

#[test]
fn release_never_underflows_and_counts_the_bug() {
    let (_dir, usage) = ledger(1);
    let slot = usage.register().unwrap();
    usage.reserve(&slot, 0, 5 * MIB, u64::MAX).unwrap();
    usage.release(&slot, 0, 8 * MIB);
    assert_eq!(usage.used(0), 0);
    assert_eq!(usage.snapshot().underflows, 1);
    usage.release(&slot, 0, 1);
    assert_eq!(usage.used(0), 0);
    assert_eq!(usage.snapshot().underflows, 2);
}

#[test]
fn releasing_another_slots_bytes_does_not_take_them_from_the_total() {
    let (_dir, usage) = ledger(1);
    let holder = usage.register().unwrap();
    let other = usage.register().unwrap();
    usage.reserve(&holder, 0, 7 * MIB, u64::MAX).unwrap();
    usage.release(&other, 0, 7 * MIB);
    assert_eq!(
        usage.used(0),
        7 * MIB,
        "the total must stay the sum of what slots hold"
    );
}

#[test]
fn a_device_outside_the_ledger_has_no_capacity() {
    let (_dir, usage) = ledger(2);
    let slot = usage.register().unwrap();
    let err = usage.reserve(&slot, 2, 1, u64::MAX).unwrap_err();
    assert_eq!(err.limit, 0);
    usage.release(&slot, 7, 1);
    assert_eq!(usage.used(2), 0);
}

#[test]
fn slots_of_one_container_share_one_cap() {
    let (_dir, usage) = ledger(1);
    let a = usage.register().unwrap();
    let b = usage.register().unwrap();
    assert_ne!(a.index(), b.index());
    usage.reserve(&a, 0, 70 * MIB, 100 * MIB).unwrap();
    assert!(usage.reserve(&b, 0, 31 * MIB, 100 * MIB).is_err());
    usage.reserve(&b, 0, 30 * MIB, 100 * MIB).unwrap();
    assert_eq!(usage.used(0), 100 * MIB);
}

#[test]
fn threads_never_overshoot_and_the_total_matches_live_bytes() {
    let (_dir, usage) = ledger(1);
    let usage = Arc::new(usage);
    let limit = 64 * MIB;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (usage, stop) = (Arc::clone(&usage), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(usage.used(0));
            }
            max
        })
    };
    let live_total = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4u64)
        .map(|seed| {
            let (usage, live_total) = (Arc::clone(&usage), Arc::clone(&live_total));
            std::thread::spawn(move || {
                let slot = usage.register().unwrap();
                let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                let mut live = Vec::new();
                for _ in 0..20_000 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if live.is_empty() || rng % 2 == 0 {
                        let bytes = 1 + rng % (4 * MIB);
                        if usage.reserve(&slot, 0, bytes, limit).is_ok() {
                            live.push(bytes);
                        }
                    } else {
                        let bytes = live.swap_remove((rng as usize / 2) % live.len());
                        usage.release(&slot, 0, bytes);
                    }
                }
                live_total.fetch_add(live.iter().sum(), Ordering::Relaxed);
                slot
            })
        })
        .collect();
    let slots: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let max = sampler.join().unwrap();
    assert!(
        max <= limit,
        "sampled {max} bytes over the {limit}-byte cap"
    );
    assert_eq!(usage.used(0), live_total.load(Ordering::Relaxed));
    drop(slots);
}

#[test]
fn a_dropped_slot_is_reclaimed_exactly_once_with_a_new_generation() {
    let (_dir, usage) = ledger(2);
    let keeper = usage.register().unwrap();
    let leaver = usage.register().unwrap();
    usage.reserve(&keeper, 0, 3 * MIB, u64::MAX).unwrap();
    usage.reserve(&leaver, 0, 5 * MIB, u64::MAX).unwrap();
    usage.reserve(&leaver, 1, 9 * MIB, u64::MAX).unwrap();
    let (index, generation) = (leaver.index(), leaver.generation());
    drop(leaver);
    let dead = usage
        .snapshot()
        .slots
        .into_iter()
        .find(|s| s.index == index)
        .unwrap();
    assert_eq!((dead.state, dead.alive), (SlotState::Live, Some(false)));

    let report = usage.reclaim_dead().unwrap();
    assert_eq!(report.freed_slots, 1);
    assert_eq!(report.freed_pids, [std::process::id()]);
    assert_eq!(report.reclaimed_bytes, [5 * MIB, 9 * MIB]);
    assert_eq!((usage.used(0), usage.used(1)), (3 * MIB, 0));
    let snapshot = usage.snapshot();
    let freed = snapshot.slots.iter().find(|s| s.index == index).unwrap();
    assert_eq!(
        (freed.state, freed.generation),
        (SlotState::Free, generation + 1)
    );
    assert_eq!(snapshot.reclaimed_slots, 1);

    let again = usage.reclaim_dead().unwrap();
    assert_eq!((again.freed_slots, again.dead_slots), (0, 0));
    assert_eq!(usage.used(0), 3 * MIB, "a second pass took bytes again");
    usage.release(&keeper, 0, 3 * MIB);
    assert_eq!(usage.used(0), 0);
}

#[test]
fn concurrent_reclaimers_free_each_dead_slot_once() {
    let (_dir, usage) = ledger(1);
    let usage = Arc::new(usage);
    for _ in 0..20 {
        let dead: Vec<_> = (0..8).map(|_| usage.register().unwrap()).collect();
        for slot in &dead {
            usage.reserve(slot, 0, MIB, u64::MAX).unwrap();
        }
        drop(dead);
        let freed: usize = (0..4)
            .map(|_| {
                let usage = Arc::clone(&usage);
                std::thread::spawn(move || {
                    let mut freed = 0;
                    for _ in 0..50 {
                        freed += usage.reclaim_dead().unwrap().freed_slots;
                    }
                    freed
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(freed, 8);
        assert_eq!(usage.used(0), 0);
    }
    assert_eq!(usage.snapshot().reclaimed_slots, 160);
}

#[test]
fn a_reservation_at_the_cap_reclaims_dead_bytes_and_succeeds() {
    let (_dir, usage) = ledger(1);
    let dead = usage.register().unwrap();
    let alive = usage.register().unwrap();
    usage.reserve(&dead, 0, 90 * MIB, 100 * MIB).unwrap();
    drop(dead);
    usage.reserve(&alive, 0, 50 * MIB, 100 * MIB).unwrap();
    assert_eq!(usage.used(0), 50 * MIB);
    assert!(usage.try_reserve(&alive, 0, 51 * MIB, 100 * MIB).is_err());
}

#[test]
fn registration_reuses_dead_slots_when_all_are_taken() {
    let (_dir, usage) = ledger(1);
    let mut slots: Vec<_> = (0..MAX_PROCESSES)
        .map(|_| usage.register().unwrap())
        .collect();
    assert!(matches!(
        usage.register(),
        Err(RegisterError::NoFreeSlot { slots: 256, .. })
    ));
    let gone = slots.swap_remove(17);
    let index = gone.index();
    drop(gone);
    let again = usage.register().unwrap();
    assert_eq!((again.index(), again.generation()), (index, 1));
}
