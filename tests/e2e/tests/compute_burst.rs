//! `burst`: a container alone uses the idle device far above its cap, and is back at its cap
//! within a second of a neighbour starting.

mod compute_common;

use compute_common::limiter_report;

#[test]
fn burst_uses_idle_capacity_and_gives_it_back_within_a_second() {
    let report = limiter_report(&["burst"]);
    let alone = report["burst_alone_share"]
        .as_f64()
        .expect("burst_alone_share");
    assert!(
        alone > 0.85,
        "a 30 % burst container alone used only {:.1} %",
        alone * 100.0
    );
    let fallback = report["burst_fallback_s"]
        .as_f64()
        .expect("the burst container never came back to its cap");
    assert!(
        fallback <= 1.0,
        "back at its cap only {fallback} s after the neighbour started"
    );
}
