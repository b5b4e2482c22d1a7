//! Every way of launching work is held to the cap: 50 µs and 20 ms kernels, graph launches and
//! cooperative launches (HAMi-core let graphs and cooperative kernels through at full speed).

mod compute_common;

use compute_common::{assert_shares_within, limiter_report};

/// CI tolerance, points (20 ms kernels make few, coarse samples in a short run).
const TOLERANCE_PP: f64 = 6.0;

#[test]
fn short_long_graph_and_cooperative_launches_are_held_to_the_cap() {
    let report = limiter_report(&["short-kernels", "long-kernels", "graph", "cooperative"]);
    assert_shares_within(&report, TOLERANCE_PP);
    let names: Vec<String> = report["shares"]
        .as_object()
        .expect("shares")
        .keys()
        .cloned()
        .collect();
    for kind in [
        "short-kernels-30/a",
        "long-kernels-30/a",
        "graph-30/a",
        "cooperative-25/a",
    ] {
        assert!(
            names.iter().any(|n| n == kind),
            "{kind} missing from {names:?}"
        );
    }
}
