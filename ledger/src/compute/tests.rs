use std::sync::atomic::{AtomicU64, Ordering};

use super::*;

fn cell() -> [AtomicU64; COMPUTE_WORDS] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

#[test]
fn fresh_budget_starts_full_to_depth() {
    let words = cell();
    let budget = Budget::with_depth(&words, 1_000);
    assert_eq!(budget.claim(1_000, 5_000_000_000, PPM / 2), Admission::Go);
    assert!(matches!(
        budget.claim(1, 5_000_000_000, PPM / 2),
        Admission::Wait { .. }
    ));
}

#[test]
fn waiter_knows_when_it_may_go() {
    let words = cell();
    let budget = Budget::with_depth(&words, 1);
    let now = 1_000_000_000;
    budget.refill(now, PPM / 4);
    let Admission::Wait { claim_end } = budget.claim(1_000_001, now, PPM / 4) else {
        panic!("an empty bucket must make a 1 ms launch wait");
    };
    // 1 ms of device time at a quarter of the device takes 4 ms of wall time.
    assert_eq!(budget.ready_at(claim_end, PPM / 4), now + 4_000_000);
    budget.refill(now + 3_999_000, PPM / 4);
    assert!(!budget.covers(claim_end));
    budget.refill(now + 4_000_000, PPM / 4);
    assert!(budget.covers(claim_end));
}

#[test]
fn idle_time_is_credited_only_up_to_depth() {
    let words = cell();
    let budget = Budget::with_depth(&words, 2_000_000);
    budget.refill(1, PPM);
    budget.refill(60_000_000_000, PPM);
    assert_eq!(budget.claim(2_000_000, 60_000_000_000, PPM), Admission::Go);
    assert!(matches!(
        budget.claim(1_000, 60_000_000_000, PPM),
        Admission::Wait { .. }
    ));
}

#[test]
fn a_forfeited_budget_makes_the_next_launch_wait() {
    let words = cell();
    let budget = Budget::with_depth(&words, 10_000_000);
    budget.refill(1, PPM);
    budget.refill(1_000_000_000, PPM);
    assert_eq!(budget.claim(1_000, 1_000_000_000, PPM), Admission::Go);
    budget.forfeit_unused();
    assert!(matches!(
        budget.claim(1_000, 1_000_000_000, PPM),
        Admission::Wait { .. }
    ));
}

#[test]
fn corrections_make_debits_equal_measured_time() {
    let words = cell();
    let budget = Budget::new(&words);
    for _ in 0..10 {
        let _ = budget.claim(100, 1, PPM);
    }
    assert_eq!(budget.estimated_total_ns(), 1_000);
    budget.debit_correction(500);
    budget.credit_correction(200);
    assert_eq!(budget.estimated_total_ns(), 1_000);
    assert_eq!(budget.net_correction_ns(), 300);
}

#[test]
fn measurer_lease_has_one_holder_and_expires() {
    let words = cell();
    let budget = Budget::new(&words);
    assert!(budget.hold_measurer_lease(10, 1_000, 500));
    assert!(!budget.hold_measurer_lease(11, 1_200, 500));
    assert!(budget.hold_measurer_lease(10, 1_400, 500));
    assert!(!budget.hold_measurer_lease(11, 1_800, 500));
    assert!(budget.hold_measurer_lease(11, 1_901, 500));
}

#[test]
fn burst_sees_others_but_not_itself() {
    let words = cell();
    let cell = ContentionCell::new(&words);
    let me = cell.claim_slot(SlotClass::Normal);
    let other = cell.claim_slot(SlotClass::Normal);
    assert_ne!(me, other);
    cell.publish_demand(me, false, 1_000);
    assert!(!cell.view().others_demand(Some(me), 1_100, 500));
    cell.publish_demand(other, false, 1_050);
    assert!(cell.view().others_demand(Some(me), 1_100, 500));
    assert!(!cell.view().others_demand(Some(me), 2_000, 500));
    cell.release_slot(other);
    assert_eq!(cell.view().claimed_slots(), 1);
}

#[test]
fn high_demand_is_seen_by_others_only() {
    let words = cell();
    let cell = ContentionCell::new(&words);
    let high = cell.claim_slot(SlotClass::High);
    let low = cell.claim_slot(SlotClass::Normal);
    cell.publish_demand(high, true, 500);
    cell.publish_demand(low, false, 900);
    assert_eq!(cell.view().latest_high_demand(Some(low), false), 500);
    assert_eq!(cell.view().latest_high_demand(Some(high), false), 0);
    cell.release_slot(high);
    assert_eq!(cell.view().latest_high_demand(Some(low), false), 0);
}

#[test]
fn capped_neighbours_yield_only_to_uncapped_high_containers() {
    let words = cell();
    let cell = ContentionCell::new(&words);
    let high_capped = cell.claim_slot(SlotClass::HighCapped);
    let batch = cell.claim_slot(SlotClass::Normal);
    cell.publish_demand(high_capped, true, 500);
    assert_eq!(
        cell.view().latest_high_demand(Some(batch), true),
        0,
        "a capped container already leaves a capped high one its share"
    );
    assert_eq!(
        cell.view().latest_high_demand(Some(batch), false),
        500,
        "an uncapped container would take it"
    );
    let high = cell.claim_slot(SlotClass::High);
    cell.publish_demand(high, true, 700);
    assert_eq!(cell.view().latest_high_demand(Some(batch), true), 700);
    cell.release_slot(high);
    cell.release_slot(high_capped);
    let reused = cell.claim_slot(SlotClass::High);
    cell.publish_demand(reused, true, 900);
    assert_eq!(
        cell.view().latest_high_demand(Some(batch), true),
        900,
        "a released slot's capped mark does not outlive it"
    );
}

#[test]
fn the_class_of_a_container_follows_its_priority_and_cap() {
    use crate::Priority;
    assert_eq!(SlotClass::of(Priority::Normal, Some(30)), SlotClass::Normal);
    assert_eq!(
        SlotClass::of(Priority::High, Some(30)),
        SlotClass::HighCapped
    );
    assert_eq!(SlotClass::of(Priority::High, Some(100)), SlotClass::High);
    assert_eq!(SlotClass::of(Priority::High, None), SlotClass::High);
}

#[test]
fn high_presence_is_seen_by_others_before_their_first_launch() {
    let words = cell();
    let cell = ContentionCell::new(&words);
    let low = cell.claim_slot(SlotClass::Normal);
    assert!(!cell.view().high_priority_present(Some(low)));
    let high = cell.claim_slot(SlotClass::High);
    assert!(
        cell.view().high_priority_present(Some(low)),
        "a claimed high slot counts before it publishes any demand"
    );
    assert!(!cell.view().high_priority_present(Some(high)));
    cell.release_slot(high);
    assert!(!cell.view().high_priority_present(Some(low)));
    cell.publish_demand(ContentionSlot::Overflow, true, 7);
    assert!(cell.view().high_priority_present(Some(low)));
}

#[test]
fn slots_run_out_into_overflow() {
    let words = cell();
    let cell = ContentionCell::new(&words);
    for _ in 0..CONTENTION_SLOTS {
        assert!(matches!(
            cell.claim_slot(SlotClass::Normal),
            ContentionSlot::Own(_)
        ));
    }
    assert_eq!(cell.claim_slot(SlotClass::High), ContentionSlot::Overflow);
    cell.publish_demand(ContentionSlot::Overflow, true, 7);
    assert_eq!(
        cell.view()
            .latest_high_demand(Some(ContentionSlot::Own(0)), false),
        7
    );
    assert!(
        cell.view()
            .others_demand(Some(ContentionSlot::Own(0)), 8, 10)
    );
}

#[test]
fn concurrent_claims_are_served_in_full_and_in_order() {
    let words = cell();
    let budget = Budget::with_depth(&words, 1);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    let _ = budget.claim(3, 0, PPM);
                }
            });
        }
    });
    assert_eq!(budget.estimated_total_ns(), 4 * 10_000 * 3);
    assert_eq!(budget.launches(), 40_000);
}

#[test]
fn publisher_shows_a_container_to_its_neighbours_and_leaves_cleanly() {
    use crate::{ComputePolicy, ContainerLimits, DeviceInfo, DeviceLimit, Priority, Vendor};
    let dir = tempfile::tempdir().expect("tempdir");
    let device = DeviceInfo {
        uuid: "GPU-compute-test".into(),
        index: 0,
        vendor: Vendor::Nvidia,
        total_memory: 1 << 30,
        compute_units: 8,
    };
    let node_path = dir.path().join("node.ledger");
    let node = crate::NodeLedger::create(&node_path, &[device]).expect("node part");
    let limits = |id: &str, priority| ContainerLimits {
        container_id: id.into(),
        devices: vec![DeviceLimit {
            uuid: "GPU-compute-test".into(),
            memory_limit: None,
            compute_percent: Some(30),
            policy: ComputePolicy::Hard,
            priority,
        }],
    };
    let usage_of = |name: &str| {
        let path = dir.path().join(name);
        crate::UsageLedger::create(&path, 1).expect("usage part");
        crate::UsageLedger::attach(&path).expect("attach")
    };
    let (usage_a, usage_b) = (usage_of("a.usage"), usage_of("b.usage"));
    let reader = crate::NodeLedger::open(&node_path).expect("read-only node part");
    let view_words = NodeContentionWords::new(&reader, 0);
    let view = Contention::new(&view_words);
    {
        let high = ContentionPublisher::new(&node, &usage_a, &limits("a", Priority::High))
            .expect("publisher a");
        let low = ContentionPublisher::new(&node, &usage_b, &limits("b", Priority::Normal))
            .expect("publisher b");
        assert_eq!(view.claimed_slots(), 2);
        let budget_a = Budget::new(&usage_a.compute_cell(0).expect("cell").words);
        let budget_b = Budget::new(&usage_b.compute_cell(0).expect("cell").words);
        let _ = budget_a.claim(1, 5_000_000, PPM);
        high.publish_once();
        low.publish_once();
        let own_b = budget_b.contention_slot();
        assert_eq!(view.latest_high_demand(own_b, false), 5_000_000);
        assert!(view.others_demand(own_b, 5_000_001, 1_000));
        assert!(!view.others_demand(budget_a.contention_slot(), 5_000_001, 1_000));
    }
    assert_eq!(
        view.claimed_slots(),
        0,
        "dropped publishers give their slots back"
    );
}

proptest::proptest! {
    /// Whatever the order of refills, claims and corrections, the budget never credits more
    /// than `rate × elapsed + depth + credits`, and a claim is admitted only once covered.
    #[test]
    fn budget_never_exceeds_rate_plus_depth(
        steps in proptest::collection::vec((0u64..5_000_000, 0u64..3_000_000), 1..200),
        rate in 10_000u64..=PPM,
    ) {
        let words = cell();
        let budget = Budget::new(&words);
        let start = 1_000_000_000u64;
        budget.refill(start, rate);
        let base = budget.words()[usage_word::REFILLED].load(Ordering::Relaxed);
        let mut now = start;
        let mut admitted = 0u64;
        for (advance, cost) in steps {
            now += advance;
            if let Admission::Go = budget.claim(cost, now, rate) {
                admitted += cost;
            }
            let refilled = budget.words()[usage_word::REFILLED].load(Ordering::Relaxed);
            let bound = base + u64::try_from(
                u128::from(now - start) * u128::from(rate) / u128::from(PPM)
            ).unwrap() + 1;
            proptest::prop_assert!(refilled <= bound);
            proptest::prop_assert!(admitted <= refilled);
        }
    }
}
