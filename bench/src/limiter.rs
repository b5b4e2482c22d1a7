//! The compute-limiter harness behind `hami bench limiter`: real processes under `hami run`
//! launching kernels as fast as they can, and the device's own record of how busy each one
//! kept it.
//!
//! For each [`scenarios::Scenario`] the harness creates a private ledger directory (shared by
//! the scenario's tenants, as containers on one node share it) and, on the simulated device, a
//! private device, starts the [`probe`] in the device's environment, starts every tenant as
//! `hami run --cores … -- hami bench limiter load …` (the [`worker`]) at its time, and turns
//! the probe's per-process busy time into shares, convergence and overshoot ([`metrics`]).
//! The limiter's own counters are never used: the truth is what the device measured.

pub mod containers;
pub mod hot_path;
pub mod metrics;
pub mod probe;
pub mod scenarios;
pub mod session;
pub mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use metrics::{BusySeries, came_down_s, convergence_s, longest_overshoot_s};
use probe::{ProbeSample, monotonic_ns};
use scenarios::{Check, Scenario, TenantSpec};
use session::{FinishedTenant, Session};

/// Convergence: the 1-s share comes within this many points of the cap…
pub const CONVERGED_WITHIN_PP: f64 = 3.0;
/// …and then stays within this many (window-to-window noise allowed).
pub const STAYS_WITHIN_PP: f64 = 6.0;
/// Overshoot margin: share above cap + this many points counts as overshoot.
pub const OVERSHOOT_MARGIN_PP: f64 = 10.0;
const SECOND: u64 = 1_000_000_000;

/// Where the tenants' kernels run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// The simulated device, one private instance per scenario (`hami sim env`).
    Simulated,
    /// The machine's real GPU (device 0), with the real driver.
    Real,
}

/// How to run the harness.
#[derive(Debug, Clone)]
pub struct HarnessOptions {
    /// The `hami` executable (for `hami run`, `hami sim env`, the worker and the probe).
    pub hami: PathBuf,
    pub device: DeviceKind,
    /// Shorter scenarios (CI).
    pub quick: bool,
    /// Only scenarios whose name starts with one of these (all when empty).
    pub only: Vec<String>,
    /// Run each tenant as a container through the `hami` runtime of this containerd instead
    /// of under `hami run` (simulated device only).
    pub containers: Option<containers::ContainerRuntime>,
}

/// The harness could not run a scenario.
#[derive(Debug, Error)]
pub enum HarnessError {
    #[error("scenario {scenario}: starting {what}: {source}")]
    Spawn {
        scenario: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "scenario {scenario}: tenant {tenant} reported no process id (did `hami run` start it?): {stderr}"
    )]
    NoPid {
        scenario: String,
        tenant: String,
        stderr: String,
    },
    #[error("scenario {scenario}: tenant {tenant} failed ({status}): {stderr}")]
    TenantFailed {
        scenario: String,
        tenant: String,
        status: String,
        stderr: String,
    },
    #[error("scenario {scenario}: the probe saw no samples: {stderr}")]
    NoSamples { scenario: String, stderr: String },
    #[error("preparing the simulated device: {0}")]
    SimEnv(#[from] crate::sim_env::SimEnvError),
    #[error("creating a temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("no scenario matches {0:?}")]
    NoScenario(Vec<String>),
    #[error(
        "tenants in containers run on the simulated device only: a real GPU's device nodes and driver libraries would have to be put in each container (nvidia-container-toolkit), which the harness does not do"
    )]
    ContainersNeedSimulatedDevice,
}

/// One tenant's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TenantResult {
    pub name: String,
    pub cap_percent: Option<u32>,
    pub policy: String,
    pub priority: String,
    pub launch: String,
    pub kernel_us: u64,
    /// Busy share of the device in the measurement window (0..=1).
    pub share: f64,
    /// |share − cap| in points, for capped tenants.
    pub error_pp: Option<f64>,
    /// Seconds from start until the 1-s share comes within ±3 points of the cap and then
    /// stays within ±6; `None`: never.
    pub convergence_s: Option<f64>,
    /// Longest stretch above cap + 10 points, s (250 ms windows).
    pub overshoot_s: f64,
    pub kernels: u64,
    pub seconds: f64,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScenarioResult {
    pub name: String,
    pub tenants: Vec<TenantResult>,
    /// Burst: the burst tenant's share while alone.
    pub burst_alone_share: Option<f64>,
    /// Burst: seconds from the neighbour's start to the end of the first half-second window in
    /// which the burst tenant is back within 5 points of its cap (and stays within 10).
    pub burst_fallback_s: Option<f64>,
    /// Priority: the high tenant's throughput beside the low one over its solo throughput.
    pub priority_throughput_ratio: Option<f64>,
}

/// Everything the harness measured, as `--json` prints it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LimiterReport {
    pub device: String,
    pub scenarios: Vec<ScenarioResult>,
    /// `scenario/tenant` → measured share, for every capped tenant.
    pub shares: BTreeMap<String, f64>,
    /// Largest |share − cap| over capped tenants of share scenarios, points.
    pub max_error_pp: f64,
    /// Largest convergence time over capped tenants (`None` if one never converged).
    pub convergence_s: Option<f64>,
    /// Longest overshoot above cap + 10 points over all capped tenants, s.
    pub max_overshoot_s: f64,
    pub priority_throughput_ratio: Option<f64>,
    pub burst_alone_share: Option<f64>,
    pub burst_fallback_s: Option<f64>,
    /// What admitting a launch costs with budget available (ns per call, medians).
    pub hot_path: hot_path::HotPathCost,
    /// How late a throttled launch wakes, µs.
    pub wake_latency: hot_path::WakeLatency,
}

/// Runs the selected scenarios and gathers the report.
pub fn run_harness(options: &HarnessOptions) -> Result<LimiterReport, HarnessError> {
    if options.containers.is_some() && options.device != DeviceKind::Simulated {
        return Err(HarnessError::ContainersNeedSimulatedDevice);
    }
    let selected: Vec<Scenario> = scenarios::all(options.quick)
        .into_iter()
        .filter(|s| options.only.is_empty() || options.only.iter().any(|o| s.name.starts_with(o)))
        .collect();
    if selected.is_empty() {
        return Err(HarnessError::NoScenario(options.only.clone()));
    }
    let mut results = Vec::new();
    for scenario in &selected {
        results.push(run_scenario(options, scenario)?);
    }
    Ok(summarize(options, results))
}

fn summarize(options: &HarnessOptions, scenarios: Vec<ScenarioResult>) -> LimiterReport {
    let mut shares = BTreeMap::new();
    let mut max_error_pp: f64 = 0.0;
    let mut convergence: Option<f64> = Some(0.0);
    let mut max_overshoot_s: f64 = 0.0;
    for scenario in &scenarios {
        for tenant in &scenario.tenants {
            if tenant.cap_percent.is_none() {
                continue;
            }
            shares.insert(format!("{}/{}", scenario.name, tenant.name), tenant.share);
            max_overshoot_s = max_overshoot_s.max(tenant.overshoot_s);
            if let Some(error) = tenant.error_pp {
                max_error_pp = max_error_pp.max(error);
                convergence = match (convergence, tenant.convergence_s) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
        }
    }
    let first = |f: fn(&ScenarioResult) -> Option<f64>| scenarios.iter().find_map(f);
    LimiterReport {
        device: match (&options.device, &options.containers) {
            (DeviceKind::Simulated, None) => "simulated".into(),
            (DeviceKind::Simulated, Some(_)) => "simulated, tenants in containers".into(),
            (DeviceKind::Real, _) => "real".into(),
        },
        shares,
        max_error_pp,
        convergence_s: convergence,
        max_overshoot_s,
        priority_throughput_ratio: first(|s| s.priority_throughput_ratio),
        burst_alone_share: first(|s| s.burst_alone_share),
        burst_fallback_s: first(|s| s.burst_fallback_s),
        hot_path: hot_path::measure(),
        wake_latency: hot_path::measure_wake(),
        scenarios,
    }
}

fn run_scenario(
    options: &HarnessOptions,
    scenario: &Scenario,
) -> Result<ScenarioResult, HarnessError> {
    match scenario.check {
        Check::Priority => run_priority(options, scenario),
        _ => {
            let (tenants, samples, origin) = execute(options, scenario, &scenario.tenants)?;
            Ok(evaluate(scenario, &tenants, &samples, origin))
        }
    }
}

/// Runs `tenants` of `scenario` to completion with the probe watching; returns them, the
/// samples and the instant the scenario started.
fn execute(
    options: &HarnessOptions,
    scenario: &Scenario,
    tenants: &[TenantSpec],
) -> Result<(Vec<FinishedTenant>, Vec<ProbeSample>, u64), HarnessError> {
    let mut session = Session::new(options, &scenario.name)?;
    let origin = monotonic_ns();
    let mut order: Vec<&TenantSpec> = tenants.iter().collect();
    order.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    for spec in order {
        let start_at = origin + (spec.start_s * 1e9) as u64;
        let now = monotonic_ns();
        if start_at > now {
            std::thread::sleep(Duration::from_nanos(start_at - now));
        }
        session.start(spec)?;
    }
    let (finished, samples) = session.finish()?;
    Ok((finished, samples, origin))
}

/// A tenant's busy series, from the probe's samples of its worker's pid.
pub fn series_of(pid: u32, samples: &[ProbeSample]) -> BusySeries {
    let mut series = BusySeries::default();
    for sample in samples {
        series.push(sample.at_ns, sample.busy_ns.get(&pid).copied().unwrap_or(0));
    }
    series
}

fn evaluate(
    scenario: &Scenario,
    tenants: &[FinishedTenant],
    samples: &[ProbeSample],
    origin: u64,
) -> ScenarioResult {
    let end = origin + (scenario.seconds * 1e9) as u64;
    let mut result = ScenarioResult {
        name: scenario.name.clone(),
        tenants: Vec::new(),
        burst_alone_share: None,
        burst_fallback_s: None,
        priority_throughput_ratio: None,
    };
    // Shares are measured while every tenant runs, after the settling time.
    let last_start = tenants.iter().map(|t| t.started_ns).max().unwrap_or(origin);
    let window_start = last_start + (scenario.settle_s * 1e9) as u64;
    for tenant in tenants {
        let series = series_of(tenant.pid, samples);
        let cap = tenant.spec.cores.map(|c| f64::from(c) / 100.0);
        let share = series.share(window_start, end);
        let (error_pp, convergence, overshoot) = match cap {
            Some(cap) => (
                Some((share - cap).abs() * 100.0),
                convergence_s(
                    &series,
                    tenant.started_ns,
                    end,
                    cap,
                    (CONVERGED_WITHIN_PP, STAYS_WITHIN_PP),
                    SECOND,
                )
                .filter(|_| scenario.check == Check::Shares),
                longest_overshoot_s(
                    &series,
                    tenant.started_ns,
                    end,
                    cap,
                    OVERSHOOT_MARGIN_PP,
                    SECOND / 4,
                ),
            ),
            None => (None, None, 0.0),
        };
        result.tenants.push(TenantResult {
            name: tenant.spec.name.clone(),
            cap_percent: tenant.spec.cores,
            policy: tenant.spec.policy.into(),
            priority: tenant.spec.priority.into(),
            launch: tenant.spec.worker.launch.name().into(),
            kernel_us: tenant.spec.worker.kernel_us,
            share,
            error_pp: error_pp.filter(|_| scenario.check == Check::Shares),
            convergence_s: convergence,
            overshoot_s: if scenario.check == Check::Burst {
                0.0
            } else {
                overshoot
            },
            kernels: tenant.report.kernels,
            seconds: tenant.report.seconds,
        });
    }
    if scenario.check == Check::Burst {
        evaluate_burst(tenants, samples, end, &mut result);
    }
    result
}

/// Burst: tenant 0's share while alone, and how fast it is back at its cap once tenant 1 runs.
fn evaluate_burst(
    tenants: &[FinishedTenant],
    samples: &[ProbeSample],
    end: u64,
    result: &mut ScenarioResult,
) {
    let (Some(bursty), Some(neighbour)) = (tenants.first(), tenants.get(1)) else {
        return;
    };
    let series = series_of(bursty.pid, samples);
    let cap = f64::from(bursty.spec.cores.unwrap_or(100)) / 100.0;
    let alone_from = bursty.started_ns + SECOND / 2;
    result.burst_alone_share = Some(series.share(alone_from, neighbour.started_ns));
    // Back at the cap: the first half-second window at most 5 points above it, after which
    // none is more than 10 above (a full 50 ms bucket spent in one window is 10 points).
    // Timed from when the neighbour really started running kernels (above 10 % of the device):
    // its process and driver start-up are not the limiter's doing.
    let neighbour_busy_from = series_of(neighbour.pid, samples)
        .started_busy_ns(0.10)
        .unwrap_or(neighbour.started_ns);
    result.burst_fallback_s = came_down_s(
        &series,
        neighbour_busy_from,
        end,
        (cap + 0.05, cap + 0.10),
        SECOND / 2,
    );
}

/// Priority: the high tenant's fixed job solo, then beside a saturating low tenant.
fn run_priority(
    options: &HarnessOptions,
    scenario: &Scenario,
) -> Result<ScenarioResult, HarnessError> {
    let high = scenario.tenants[0].clone();
    let mut solo_spec = high.clone();
    solo_spec.start_s = 0.0;
    let (solo, _, _) = execute(options, scenario, std::slice::from_ref(&solo_spec))?;
    let (shared, samples, origin) = execute(options, scenario, &scenario.tenants)?;
    let mut result = evaluate(scenario, &shared, &samples, origin);
    let throughput = |t: &FinishedTenant| t.report.kernels as f64 / t.report.seconds.max(1e-9);
    if let (Some(solo), Some(beside)) = (
        solo.first(),
        shared.iter().find(|t| t.spec.name == high.name),
    ) {
        result.priority_throughput_ratio = Some(throughput(beside) / throughput(solo));
    }
    Ok(result)
}

/// Renders the report as the human table `hami bench limiter` prints.
pub fn render_table(report: &LimiterReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("device: {}\n", report.device));
    out.push_str(&format!(
        "{:<20} {:<6} {:>4} {:<6} {:<12} {:>8} {:>8} {:>8} {:>9} {:>10}\n",
        "scenario",
        "tenant",
        "cap",
        "policy",
        "launch",
        "kernel",
        "share",
        "error",
        "converge",
        "overshoot"
    ));
    for scenario in &report.scenarios {
        for t in &scenario.tenants {
            out.push_str(&format!(
                "{:<20} {:<6} {:>4} {:<6} {:<12} {:>6}us {:>7.1}% {:>8} {:>9} {:>9.2}s\n",
                scenario.name,
                t.name,
                t.cap_percent.map_or("-".into(), |c| format!("{c}%")),
                t.policy,
                t.launch,
                t.kernel_us,
                t.share * 100.0,
                t.error_pp.map_or("-".into(), |e| format!("{e:.1}pp")),
                t.convergence_s.map_or("-".into(), |c| format!("{c:.1}s")),
                t.overshoot_s,
            ));
        }
        if let Some(share) = scenario.burst_alone_share {
            out.push_str(&format!(
                "{:<20} burst tenant alone: {:.1}% of the device\n",
                "",
                share * 100.0
            ));
        }
        if let Some(fallback) = scenario.burst_fallback_s {
            out.push_str(&format!(
                "{:<20} back at its cap {fallback:.2}s after the neighbour started\n",
                ""
            ));
        }
        if let Some(ratio) = scenario.priority_throughput_ratio {
            out.push_str(&format!(
                "{:<20} high-priority throughput beside low: {:.1}% of solo\n",
                "",
                ratio * 100.0
            ));
        }
    }
    let cost = &report.hot_path;
    out.push_str(&format!(
        "admitting a launch with budget available: {:.1} ns ({:.1} ns with two threads on one \
         cell), of which {:.1} ns is the clock read\n",
        cost.admit_ns, cost.admit_contended_ns, cost.clock_ns
    ));
    let wake = &report.wake_latency;
    out.push_str(&format!(
        "a throttled launch wakes {:.0} us (p99 {:.0} us) after its deadline, {:.0} us (p99 {:.0} \
         us) after a wake-up\n",
        wake.deadline_p50_us, wake.deadline_p99_us, wake.woken_p50_us, wake.woken_p99_us
    ));
    out.push_str(&format!(
        "max error {:.2} pp, convergence {}, longest overshoot {:.2}s\n",
        report.max_error_pp,
        report
            .convergence_s
            .map_or("never".into(), |c| format!("{c:.1}s")),
        report.max_overshoot_s
    ));
    out
}
