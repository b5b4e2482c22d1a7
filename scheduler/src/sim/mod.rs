//! The FGD paper's simulation protocol on a trace: shuffle with the seed, inflate to
//! 130 % of the cluster's device compute by drawing with replacement, submit every task
//! once in order (no retries, no departures), and measure after every task.

mod curve;
mod summary;

pub use curve::{Curve, CurvePoint};
pub use summary::{PolicySummary, Stat, summarize};

use std::time::Instant;

use crate::cluster::Cluster;
use crate::frag::TargetWorkload;
use crate::policy::{NodePolicy, Scheduler, Scorer};
use crate::request::Request;
use crate::rng::Rng;
use crate::trace::Trace;

/// Share of all tasks the target workload's classes cover (the paper's 95 %).
pub const WORKLOAD_COVERAGE: f64 = 0.95;
/// Total requested device compute, as a multiple of the cluster's (the paper's 130 %).
pub const INFLATION: f64 = 1.3;
/// Mixed into the seed for the node-priority stream, so it differs from the shuffle's.
const NODE_PRIORITY_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;

/// The cluster's state after one submitted task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// Device compute of every task tried so far, failed ones included (milli).
    pub arrived_milli: u64,
    /// Device compute held by placed tasks (milli).
    pub allocated_milli: u64,
    /// Cluster fragmentation amount Σ F_n(M) (milli).
    pub fragmented_milli: f64,
    /// Free device compute Σ U_n (milli).
    pub free_milli: u64,
}

/// Everything one simulation run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub policy: NodePolicy,
    pub seed: u64,
    pub capacity_milli: u64,
    /// Tasks submitted (after inflation).
    pub tasks: usize,
    pub failed: usize,
    /// Device compute of all submitted tasks (milli).
    pub requested_milli: u64,
    /// Tasks placed before the first failure.
    pub placed_before_first_failure: usize,
    pub events: Vec<Event>,
    /// Wall time of each placement decision, nanoseconds.
    pub decision_ns: Vec<u64>,
}

impl RunResult {
    /// The events binned by arrived percentage, as the paper bins them.
    pub fn curve(&self) -> Curve {
        Curve::from_events(&self.events, self.capacity_milli)
    }
}

/// The target workload M of a trace (from its original task list), with each class's
/// median memory (the paper's policies and metric use [`TargetWorkload::ignoring_memory`]).
pub fn target_workload(trace: &Trace) -> TargetWorkload {
    TargetWorkload::from_tasks(
        trace
            .tasks
            .iter()
            .map(|t| (&t.key, t.request.models, t.request.memory_mib)),
        WORKLOAD_COVERAGE,
    )
}

/// The task sequence of one run: the trace shuffled by `seed`, then inflated.
pub fn submission_order(trace: &Trace, capacity_milli: u64, seed: u64) -> Vec<&Request> {
    let mut rng = Rng::new(seed);
    let mut order: Vec<&Request> = trace.tasks.iter().map(|t| &t.request).collect();
    rng.shuffle(&mut order);
    let limit = (INFLATION * capacity_milli as f64) as u64;
    let mut total: u64 = order.iter().map(|r| r.device_milli_total()).sum();
    if trace.tasks.is_empty() {
        return order;
    }
    loop {
        let next = &trace.tasks[rng.below(trace.tasks.len())].request;
        if total + next.device_milli_total() > limit {
            break;
        }
        total += next.device_milli_total();
        order.push(next);
    }
    order
}

/// The workload a policy scores against: ours measures capacity, memory and device
/// scarcity; the paper's policies (and the fragmentation metric) use the paper's measure.
pub fn policy_workload(
    trace: &Trace,
    workload: &TargetWorkload,
    policy: NodePolicy,
) -> TargetWorkload {
    match policy {
        NodePolicy::Ours => workload.capacity_aware().scarcity_weighted(&trace.nodes),
        _ => workload.ignoring_memory(),
    }
}

/// Runs one policy with one seed over the trace.
pub fn run(trace: &Trace, workload: &TargetWorkload, policy: NodePolicy, seed: u64) -> RunResult {
    let mut cluster = Cluster::new(trace.nodes.clone(), trace.models.clone());
    let capacity = cluster.capacity_milli();
    let order = submission_order(trace, capacity, seed);
    let policy_workload = policy_workload(trace, workload, policy);
    let workload = &workload.ignoring_memory();
    // The node priority uses a stream apart from the shuffle's, as the artifact's does.
    let mut scheduler = Scheduler::new(
        policy,
        policy_workload,
        cluster.nodes.len(),
        seed ^ NODE_PRIORITY_STREAM,
    );
    let mut meter = FragMeter::new(&cluster, workload);
    let mut result = RunResult {
        policy,
        seed,
        capacity_milli: capacity,
        tasks: order.len(),
        failed: 0,
        requested_milli: order.iter().map(|r| r.device_milli_total()).sum(),
        placed_before_first_failure: 0,
        events: Vec::with_capacity(order.len()),
        decision_ns: Vec::with_capacity(order.len()),
    };
    let (mut arrived, mut allocated) = (0u64, 0u64);
    for request in order {
        let started = Instant::now();
        let decision = scheduler.decide(&cluster, request);
        result
            .decision_ns
            .push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        arrived += request.device_milli_total();
        match decision {
            Some(d) if cluster.apply(d.node, request, &d.devices).is_ok() => {
                allocated += request.device_milli_total();
                meter.node_changed(&cluster, d.node);
                if result.failed == 0 {
                    result.placed_before_first_failure += 1;
                }
            }
            _ => result.failed += 1,
        }
        result.events.push(Event {
            arrived_milli: arrived,
            allocated_milli: allocated,
            fragmented_milli: meter.total,
            free_milli: capacity - allocated,
        });
    }
    result
}

/// Cluster fragmentation kept up to date one changed node at a time.
struct FragMeter {
    scorer: Scorer,
    per_node: Vec<f64>,
    total: f64,
}

impl FragMeter {
    fn new(cluster: &Cluster, workload: &TargetWorkload) -> Self {
        let mut scorer = Scorer::new(workload.clone());
        let per_node: Vec<f64> = cluster
            .nodes
            .iter()
            .map(|n| {
                scorer.fragmentation(
                    n.cpu_free,
                    n.memory_free,
                    &n.device_free_milli,
                    n.spec.model,
                )
            })
            .collect();
        let total = per_node.iter().sum();
        FragMeter {
            scorer,
            per_node,
            total,
        }
    }

    fn node_changed(&mut self, cluster: &Cluster, index: usize) {
        let n = &cluster.nodes[index];
        let now = self.scorer.fragmentation(
            n.cpu_free,
            n.memory_free,
            &n.device_free_milli,
            n.spec.model,
        );
        self.total += now - self.per_node[index];
        self.per_node[index] = now;
    }
}

/// The fragmentation amount of the empty cluster, % of its device compute.
pub fn empty_cluster_fragmentation(trace: &Trace, workload: &TargetWorkload) -> f64 {
    let cluster = Cluster::new(trace.nodes.clone(), trace.models.clone());
    let meter = FragMeter::new(&cluster, &workload.ignoring_memory());
    100.0 * meter.total / cluster.capacity_milli().max(1) as f64
}

/// Runs every policy with every seed (on up to `jobs` threads) and summarises per policy,
/// in the order of `policies`.
pub fn evaluate(
    trace: &Trace,
    policies: &[NodePolicy],
    seeds: &[u64],
    jobs: usize,
) -> Vec<PolicySummary> {
    let workload = target_workload(trace);
    let work: Vec<(NodePolicy, u64)> = policies
        .iter()
        .flat_map(|&p| seeds.iter().map(move |&s| (p, s)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(work.len()));
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, work.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(policy, seed)) = work.get(i) else {
                        break;
                    };
                    let result = run(trace, &workload, policy, seed);
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(result);
                }
            });
        }
    });
    let results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    policies
        .iter()
        .map(|&p| {
            let mut runs: Vec<RunResult> =
                results.iter().filter(|r| r.policy == p).cloned().collect();
            runs.sort_by_key(|r| r.seed);
            summarize(p, &runs)
        })
        .collect()
}
