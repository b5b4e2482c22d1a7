//! The scenarios of the limiter harness: what the issue asks the limiter to show, each as
//! tenants (one `hami run` each) with caps, policies, priorities and a kind of load.

use super::worker::{Launch, WorkerSpec};

/// How a tenant is capped.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSpec {
    pub name: String,
    /// `--cores`; `None`: no compute cap.
    pub cores: Option<u32>,
    /// `--policy`: `hard` or `burst`.
    pub policy: &'static str,
    /// `--priority`: `high` or `normal`.
    pub priority: &'static str,
    /// `--memory` (a quantity such as `1Gi`); `None`: no memory cap.
    pub memory: Option<String>,
    /// Seconds after the scenario starts that the tenant starts.
    pub start_s: f64,
    pub worker: WorkerSpec,
}

/// What a scenario checks beyond every capped tenant's share.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Each capped tenant's share in the measurement window.
    Shares,
    /// Tenant 0 (burst) alone, then tenant 1 starts: idle capacity used, then given back.
    Burst,
    /// Tenant 0 (high) runs a fixed job solo, then beside saturating tenant 1 (normal).
    Priority,
}

/// One scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub tenants: Vec<TenantSpec>,
    /// Length of the run, s.
    pub seconds: f64,
    /// Shares are measured from this many seconds after a tenant starts (convergence allowed).
    pub settle_s: f64,
    pub check: Check,
}

/// A worker launching `launch` kernels of `kernel_us` for `seconds`, four in flight.
pub fn worker(kernel_us: u64, seconds: f64, launch: Launch) -> WorkerSpec {
    WorkerSpec {
        device: 0,
        kernel_us,
        seconds,
        kernels: None,
        launch,
        graph_kernels: 4,
        depth: 4,
        memory_mib: 0,
    }
}

/// A hard-capped, normal-priority tenant running `spec` from the start.
pub fn tenant(name: &str, cores: Option<u32>, spec: WorkerSpec) -> TenantSpec {
    TenantSpec {
        name: name.to_owned(),
        cores,
        policy: "hard",
        priority: "normal",
        memory: None,
        start_s: 0.0,
        worker: spec,
    }
}

fn shares(name: String, tenants: Vec<TenantSpec>, seconds: f64) -> Scenario {
    Scenario {
        name,
        tenants,
        seconds,
        settle_s: 2.0,
        check: Check::Shares,
    }
}

/// Every scenario. `quick` shortens them for CI (same checks, shorter windows).
pub fn all(quick: bool) -> Vec<Scenario> {
    let run = if quick { 5.0 } else { 12.0 };
    let mut list = Vec::new();
    let caps: &[u32] = if quick {
        &[25, 75]
    } else {
        &[10, 25, 50, 75, 90]
    };
    for &cap in caps {
        list.push(shares(
            format!("single-{cap}"),
            vec![tenant("a", Some(cap), worker(1_000, run, Launch::Kernel))],
            run,
        ));
    }
    list.push(shares(
        "pair-30-70".into(),
        vec![
            tenant("a", Some(30), worker(1_000, run, Launch::Kernel)),
            tenant("b", Some(70), worker(1_000, run, Launch::Kernel)),
        ],
        run,
    ));
    list.push(shares(
        "trio-20-30-50".into(),
        vec![
            tenant("a", Some(20), worker(1_000, run, Launch::Kernel)),
            tenant("b", Some(30), worker(1_000, run, Launch::Kernel)),
            tenant("c", Some(50), worker(1_000, run, Launch::Kernel)),
        ],
        run,
    ));
    list.push(shares(
        "short-kernels-30".into(),
        vec![tenant("a", Some(30), worker(50, run, Launch::Kernel))],
        run,
    ));
    list.push(shares(
        "long-kernels-30".into(),
        vec![tenant("a", Some(30), worker(20_000, run, Launch::Kernel))],
        run,
    ));
    list.push(shares(
        "graph-30".into(),
        vec![tenant("a", Some(30), worker(1_000, run, Launch::Graph))],
        run,
    ));
    let kinds: &[Launch] = if quick {
        &[Launch::Cooperative]
    } else {
        &[Launch::Ex, Launch::Cooperative, Launch::PerThread]
    };
    for &kind in kinds {
        list.push(shares(
            format!("{}-25", kind.name()),
            vec![tenant("a", Some(25), worker(1_000, run, kind))],
            run,
        ));
    }
    let (alone, together) = if quick { (3.0, 3.0) } else { (4.0, 4.0) };
    let mut bursty = tenant(
        "a",
        Some(30),
        worker(1_000, alone + together, Launch::Kernel),
    );
    bursty.policy = "burst";
    let mut neighbour = tenant("b", Some(70), worker(1_000, together, Launch::Kernel));
    neighbour.start_s = alone;
    list.push(Scenario {
        name: "burst-30".into(),
        tenants: vec![bursty, neighbour],
        seconds: alone + together,
        settle_s: 1.0,
        check: Check::Burst,
    });
    let job = if quick { 1_000 } else { 3_000 };
    let mut high = tenant("high", None, worker(1_000, 0.0, Launch::Kernel));
    high.priority = "high";
    high.worker.kernels = Some(job);
    high.start_s = 0.5;
    let low_seconds = 0.5 + job as f64 / 1_000.0 * 2.5;
    let low = tenant("low", None, worker(1_000, low_seconds, Launch::Kernel));
    list.push(Scenario {
        name: "priority".into(),
        tenants: vec![high, low],
        seconds: low_seconds,
        settle_s: 0.0,
        check: Check::Priority,
    });
    list
}
