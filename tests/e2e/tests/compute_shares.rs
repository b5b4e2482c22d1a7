//! Containers capped at X % of a device get X % of its busy time, alone and side by side,
//! measured by the device (not by the limiter), through `hami run` on the simulated device.
//!
//! CI's tolerance is ±5 points over a few seconds on a loaded two-core machine; the full
//! harness (`hami bench limiter`, docs/limiter.md) holds ±3 points over 10 s.

mod compute_common;

use compute_common::{assert_shares_within, limiter_report};

/// CI tolerance, points.
const TOLERANCE_PP: f64 = 5.0;

#[test]
fn a_lone_container_gets_its_cap_and_no_more() {
    let report = limiter_report(&["single"]);
    assert_shares_within(&report, TOLERANCE_PP);
    let overshoot = report["max_overshoot_s"].as_f64().expect("max_overshoot_s");
    assert!(overshoot <= 1.0, "above cap + 10 points for {overshoot} s");
}

#[test]
fn saturating_neighbours_split_the_device_by_their_caps() {
    let report = limiter_report(&["pair", "trio"]);
    assert_shares_within(&report, TOLERANCE_PP);
}
