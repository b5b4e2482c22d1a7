//! Placement speed, printed as figures (no timed assertions):
//! 1. a full default-trace run (about 8,000 tasks at 130 %) per policy on one thread,
//!    median of three, with its ratio to Best-fit in the same process;
//! 2. decision latency (median, p99) on a synthetic 10× cluster: the openb nodes and tasks
//!    replicated ten times (12,130 nodes, about 80,000 tasks).
//!
//! `cargo bench -p hami-scheduler --bench placement` (set `HAMI_OPENB_DIR` to move the trace).

use std::path::PathBuf;
use std::time::Instant;

use hami_scheduler::policy::NodePolicy;
use hami_scheduler::sim;
use hami_scheduler::trace::Trace;

fn main() {
    let dir = std::env::var_os("HAMI_OPENB_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/openb"),
        PathBuf::from,
    );
    let trace = match Trace::load(
        &dir.join("openb_node_list_gpu_node.csv"),
        &dir.join("openb_pod_list_default.csv"),
    ) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("placement bench: the openb trace is needed (set HAMI_OPENB_DIR): {e}");
            std::process::exit(1);
        }
    };
    let workload = sim::target_workload(&trace);

    println!("full default-trace run, one thread, median of 3 (seed 42)");
    let mut baseline = None;
    for policy in [NodePolicy::BestFit, NodePolicy::Fgd, NodePolicy::Ours] {
        let mut times: Vec<f64> = (0..3)
            .map(|_| {
                let started = Instant::now();
                let run = sim::run(&trace, &workload, policy, 42);
                std::hint::black_box(run.failed);
                started.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[1];
        let base = *baseline.get_or_insert(median);
        println!(
            "  {:<8} {:>7.3} s   {:>5.2}× bestfit",
            policy.name(),
            median,
            median / base
        );
    }

    let mut big = trace.clone();
    big.nodes = (0..10)
        .flat_map(|copy| {
            trace.nodes.iter().map(move |n| {
                let mut n = n.clone();
                n.name = format!("{}-x{copy}", n.name);
                n
            })
        })
        .collect();
    big.tasks = (0..10).flat_map(|_| trace.tasks.iter().cloned()).collect();
    let big_workload = sim::target_workload(&big);
    println!(
        "decision latency on the 10x cluster ({} nodes), seed 42",
        big.nodes.len()
    );
    for policy in [NodePolicy::BestFit, NodePolicy::Fgd, NodePolicy::Ours] {
        let started = Instant::now();
        let run = sim::run(&big, &big_workload, policy, 42);
        let mut ns = run.decision_ns.clone();
        ns.sort_unstable();
        let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!(
            "  {:<8} {} decisions in {:.1} s: median {:.0} µs, p99 {:.0} µs, max {:.0} µs",
            policy.name(),
            ns.len(),
            started.elapsed().as_secs_f64(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
}
