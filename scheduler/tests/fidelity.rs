//! Simulator fidelity against the FGD paper's artifact (shared/notes/scheduler-sim.md §6):
//! the empty cluster's fragmentation, the inflation, and the paper's six policies on the
//! default openb trace with a reduced seed count (the full 10-seed table is in
//! docs/scheduler.md, made by `hami simulate`).
//!
//! The trace lives in `shared/data/openb/` beside the repository; `HAMI_OPENB_DIR`
//! overrides. Without it these tests fail, naming the path.

use std::path::PathBuf;

use hami_scheduler::policy::NodePolicy;
use hami_scheduler::sim;
use hami_scheduler::trace::Trace;

fn openb() -> PathBuf {
    std::env::var_os("HAMI_OPENB_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/openb"),
        PathBuf::from,
    )
}

fn default_trace() -> Trace {
    let dir = openb();
    Trace::load(
        &dir.join("openb_node_list_gpu_node.csv"),
        &dir.join("openb_pod_list_default.csv"),
    )
    .unwrap_or_else(|e| panic!("the openb trace is needed (set HAMI_OPENB_DIR): {e}"))
}

#[test]
fn cluster_and_workload_match_the_paper() {
    let trace = default_trace();
    assert_eq!(trace.nodes.len(), 1213);
    let gpus: usize = trace.nodes.iter().map(|n| n.devices.len()).sum();
    assert_eq!(gpus, 6212);
    let workload = sim::target_workload(&trace);
    assert_eq!(workload.classes.len(), 35);
    let empty = sim::empty_cluster_fragmentation(&trace, &workload);
    assert!(
        (empty - 13.94).abs() < 0.005,
        "empty-cluster fragmentation {empty:.3}%"
    );
}

#[test]
fn inflation_reaches_130_percent_and_allocation_follows_arrival_until_the_first_failure() {
    let trace = default_trace();
    let run = sim::run(&trace, &sim::target_workload(&trace), NodePolicy::Fgd, 42);
    let inflated = run.requested_milli as f64 / run.capacity_milli as f64;
    assert!(
        (1.29..=1.30).contains(&inflated),
        "inflated to {inflated:.4}"
    );
    let before = &run.events[..run.placed_before_first_failure];
    assert!(before.iter().all(|e| e.allocated_milli == e.arrived_milli));
    let first_failure = run.events[run.placed_before_first_failure].arrived_milli as f64;
    assert!(
        first_failure / run.capacity_milli as f64 > 0.9,
        "FGD failed a task at {first_failure}"
    );
    assert!(run.failed > 0);
}

/// Published means at 100 % arrived (unallocated %) and medians of the fragmentation
/// rate at 80 %, from the artifact's cached results.
const PUBLISHED: [(NodePolicy, f64, f64); 6] = [
    (NodePolicy::Random, 13.70, 74.6),
    (NodePolicy::DotProduct, 9.38, 50.8),
    (NodePolicy::Clustering, 8.35, 46.7),
    (NodePolicy::Packing, 8.22, 46.2),
    (NodePolicy::BestFit, 7.14, 41.1),
    (NodePolicy::Fgd, 4.77, 29.9),
];

#[test]
fn paper_policies_land_on_the_published_numbers_and_rank_alike() {
    let trace = default_trace();
    let policies: Vec<NodePolicy> = PUBLISHED.iter().map(|p| p.0).collect();
    let summaries = sim::evaluate(&trace, &policies, &[42, 43, 44], 2);
    for ((policy, unallocated, rate), s) in PUBLISHED.iter().zip(&summaries) {
        let ours = s.unallocated_at_100.mean;
        // Our 10-seed sds are 0.13-0.41 points; three seeds stay within 0.7 of the
        // published mean unless the protocol differs.
        assert!(
            (ours - unallocated).abs() < 0.7,
            "{policy}: {ours:.2}% unallocated, published {unallocated}"
        );
        let r = s.frag_rate_at_80.median;
        assert!(
            (r - rate).abs() < 2.5,
            "{policy}: fragmentation rate {r:.1}% at 80%, published {rate}"
        );
    }
    let u = |p: NodePolicy| {
        summaries[policies.iter().position(|&q| q == p).unwrap()]
            .unallocated_at_100
            .mean
    };
    // The published order; Clustering and Packing differ by less than their spread, so
    // only their place between Dot-product and Best-fit is checked.
    assert!(u(NodePolicy::Random) > u(NodePolicy::DotProduct));
    assert!(u(NodePolicy::DotProduct) > u(NodePolicy::Clustering).max(u(NodePolicy::Packing)));
    assert!(u(NodePolicy::Clustering).min(u(NodePolicy::Packing)) > u(NodePolicy::BestFit));
    assert!(u(NodePolicy::BestFit) > u(NodePolicy::Fgd));
}
