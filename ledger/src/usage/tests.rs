//! Crash points of the protocol that only the layout can stage: a process dead between the
//! steps of a reservation, a pass dead half-way, a pass too slow to wait for.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::layout::{RECLAIM_LOCK_BYTE, SlotState, SlotWord};
use super::reclaim::DeadSlot;
use super::*;
use crate::liveness;

const MIB: u64 = 1 << 20;

fn ledger() -> (tempfile::TempDir, UsageLedger) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.ledger");
    UsageLedger::create(&path, 1).unwrap();
    let usage = UsageLedger::attach(&path).unwrap();
    (dir, usage)
}

/// A slot holding `held` bytes on device 0; dropping it stands for its process dying.
fn holding_slot(usage: &UsageLedger, held: u64) -> ProcessSlot {
    let slot = usage.register().unwrap();
    usage.reserve(&slot, 0, held, u64::MAX).unwrap();
    slot
}

#[test]
fn handles_can_live_in_statics_shared_by_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<UsageLedger>();
    shareable::<ProcessSlot>();
    shareable::<crate::NodeLedger>();
}

#[test]
fn a_process_dead_inside_a_reservation_is_reclaimed_exactly() {
    let (_dir, usage) = ledger();
    let survivor = usage.register().unwrap();
    usage.reserve(&survivor, 0, 2 * MIB, u64::MAX).unwrap();
    let layout = usage.layout();
    // Died after publishing its intent, before the CAS: the total never saw the bytes.
    let before_cas = holding_slot(&usage, MIB);
    layout.slots[before_cas.index()].inflight[0].store(1, Ordering::SeqCst);
    // Died after the CAS, before attributing the bytes to its slot.
    let after_cas = holding_slot(&usage, MIB);
    layout.slots[after_cas.index()].inflight[0].store(1, Ordering::SeqCst);
    layout.devices[0].used.fetch_add(4 * MIB, Ordering::SeqCst);
    // Died after attributing, before clearing its intent.
    let after_attribution = holding_slot(&usage, 3 * MIB);
    layout.slots[after_attribution.index()].inflight[0].store(1, Ordering::SeqCst);
    let dead = [
        before_cas.index(),
        after_cas.index(),
        after_attribution.index(),
    ];
    drop((before_cas, after_cas, after_attribution));

    let report = usage.reclaim_dead().unwrap();
    assert_eq!(report.freed_slots, 3);
    assert_eq!(usage.used(0), 2 * MIB);
    for index in dead {
        let record = &layout.slots[index];
        assert_eq!(record.inflight[0].load(Ordering::SeqCst), 0);
        assert_eq!(record.used[0].load(Ordering::SeqCst), 0);
    }
}

#[test]
fn a_pass_that_died_half_way_is_redone_without_counting_twice() {
    let (_dir, usage) = ledger();
    let survivor = usage.register().unwrap();
    usage.reserve(&survivor, 0, 2 * MIB, u64::MAX).unwrap();
    let index = holding_slot(&usage, 5 * MIB).index();
    let record = &usage.layout().slots[index];
    // The dead pass claimed the slot and already committed the totals, then died.
    record
        .state
        .store(SlotWord::encode(0, SlotState::Reclaiming), Ordering::SeqCst);
    usage.layout().devices[0]
        .used
        .store(2 * MIB, Ordering::SeqCst);
    usage.layout().control.reclaiming.store(9, Ordering::SeqCst);

    let report = usage.reclaim_dead().unwrap();
    assert_eq!((report.dead_slots, report.freed_slots), (1, 1));
    assert_eq!(usage.used(0), 2 * MIB);
    let word = SlotWord::decode(record.state.load(Ordering::SeqCst));
    assert_eq!((word.state, word.generation), (SlotState::Free, 1));
    assert_eq!(usage.layout().control.reclaiming.load(Ordering::SeqCst), 0);
}

#[test]
fn the_flag_of_a_dead_pass_is_cleared_by_the_next_operation() {
    let (_dir, usage) = ledger();
    let slot = usage.register().unwrap();
    usage
        .layout()
        .control
        .reclaiming
        .store(42, Ordering::SeqCst);
    usage.reserve(&slot, 0, MIB, u64::MAX).unwrap();
    assert_eq!(usage.layout().control.reclaiming.load(Ordering::SeqCst), 0);
    assert_eq!(usage.layout().control.bypasses.load(Ordering::SeqCst), 0);
    assert_eq!(usage.used(0), MIB);
}

#[test]
fn operations_go_ahead_after_a_bounded_wait_on_a_stuck_pass() {
    let (_dir, usage) = ledger();
    let slot = usage.register().unwrap();
    // A live pass that never finishes: it holds the reclaim lock and its flag.
    let stuck = crate::file::reopen(usage.file.as_fd(), usage.path()).unwrap();
    assert!(liveness::try_lock(stuck.as_fd(), RECLAIM_LOCK_BYTE).unwrap());
    usage.layout().control.reclaiming.store(7, Ordering::SeqCst);
    let started = std::time::Instant::now();
    usage.reserve(&slot, 0, MIB, u64::MAX).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the wait is not bounded"
    );
    assert_eq!(usage.layout().control.bypasses.load(Ordering::SeqCst), 1);
    assert_eq!(
        usage.layout().control.reclaiming.load(Ordering::SeqCst),
        7,
        "live flag cleared"
    );
    assert!(usage.reclaim_dead().unwrap().busy);
}

#[test]
fn a_pass_that_saw_an_operation_go_ahead_does_not_commit() {
    let (_dir, usage) = ledger();
    let index = holding_slot(&usage, 5 * MIB).index();
    let layout = usage.layout();
    let dead = [DeadSlot {
        index,
        generation: 0,
    }];
    let bypasses = layout.control.bypasses.load(Ordering::SeqCst);
    layout.control.bypasses.fetch_add(1, Ordering::SeqCst);
    let mut reclaimed = vec![0];
    assert!(!usage.commit_totals(layout, &dead, bypasses, &mut reclaimed));
    assert_eq!(usage.used(0), 5 * MIB);
    assert!(usage.commit_totals(layout, &dead, bypasses + 1, &mut reclaimed));
    assert_eq!((usage.used(0), reclaimed[0]), (0, 5 * MIB));
}

#[test]
fn a_pass_gives_up_while_a_live_operation_stays_in_flight() {
    let (_dir, usage) = ledger();
    let live = usage.register().unwrap();
    let index = holding_slot(&usage, 5 * MIB).index();
    let layout = usage.layout();
    layout.slots[live.index()].inflight[0].store(1, Ordering::SeqCst);

    let report = usage.reclaim_dead().unwrap();
    assert!(report.gave_up);
    assert_eq!(report.freed_slots, 0);
    assert_eq!(usage.used(0), 5 * MIB);
    assert_eq!(layout.control.reclaiming.load(Ordering::SeqCst), 0);

    layout.slots[live.index()].inflight[0].store(0, Ordering::SeqCst);
    let report = usage.reclaim_dead().unwrap();
    assert_eq!(report.freed_slots, 1);
    assert_eq!(usage.used(0), 0);
    let word = SlotWord::decode(layout.slots[index].state.load(Ordering::SeqCst));
    assert_eq!(word.state, SlotState::Free);
}
